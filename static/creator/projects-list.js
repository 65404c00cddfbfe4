/* "Your projects": the list beside the workspace, newest first, with each running job's bar and time left,
 * and Duplicate and Delete for each project. With live updates every status reaches it from the one stream of
 * all projects (`heardOf`); without them, or when that stream fails, it is read again every POLL_MS while a
 * project other than the open one runs (the open one is followed by itself and reaches it by `updateListed`). */

import { api } from "./api.js";
import { loadBalance } from "./credits.js";
import { $, el } from "./dom.js";
import { announceIfDue, dropStaleMessages } from "./notifications.js";
import { state } from "./state.js";
import { isRunning, remainingWords, secondsLeft, stamped, statusWords } from "./status.js";

export async function loadProjects(more = false) {
  const page = more ? state.nextPage : 1;
  if (!page) return;
  try {
    const { data } = await api("GET", `projects?page=${page}`);
    const before = new Map(state.projects.map((project) => [project.id, project]));
    const results = data.results.map(stamped);
    state.projects = more ? state.projects.concat(results) : results;
    state.nextPage = data.next ? page + 1 : null;
    results.forEach(dropStaleMessages);
    // A job left running in the background (not the open one) is told about here.
    const ended = data.results.filter((project) => isRunning(before.get(project.id)) && !isRunning(project));
    ended.forEach(announceIfDue);
    if (ended.length) loadBalance();
    renderProjects();
  } catch (error) {
    // The list is a convenience; the next refresh tries again.
  }
}

/* A newer status of a listed project; false if it is not listed, or the list knows a newer one. */
export function updateListed(status) {
  const index = state.projects.findIndex((item) => item.id === status.id);
  if (index < 0 || status.version < state.projects[index].version) return false;
  state.projects[index] = { ...state.projects[index], ...stamped(status) };
  renderProjects();
  return true;
}

/* A status of a project that is not open, from the stream of all projects. A job that ended is told about
 * wherever the person is (`announceIfDue` tells each finished job once); a project the list does not know
 * (made in another tab) brings the list again. */
export function heardOf(status, kind) {
  const before = state.projects.find((item) => item.id === status.id);
  if (!before) {
    if (kind === "status") reloadSoon();
    return;
  }
  if (!updateListed(status)) return;
  dropStaleMessages(status);
  const after = state.projects.find((item) => item.id === status.id);
  if (isRunning(after)) return;
  announceIfDue(after);
  if (isRunning(before)) loadBalance(); // a failed or cancelled job was refunded
}

function reloadSoon() {
  if (!state.listReload) state.listReload = loadProjects().finally(() => (state.listReload = null));
}

export function forgetListed(id) {
  state.projects = state.projects.filter((project) => project.id !== id);
  renderProjects();
}

/* Without the stream, the list is read again while a job other than the open one runs. */
export function refreshIfOthersRun() {
  if (state.stream) return;
  const openId = state.project && state.project.id;
  if (state.projects.some((project) => project.id !== openId && isRunning(project))) loadProjects();
}

/* Each project keeps its row while it is listed, its contents drawn anew: a status a second must not take a
 * button away from under a click (or the keyboard focus) on it. */
export function renderProjects() {
  const list = $("#projects-list");
  const rows = new Map(Array.from(list.children, (row) => [row.dataset.id, row]));
  state.projects.forEach((project, index) => {
    const row = rows.get(project.id) || projectRow(project.id);
    rows.delete(project.id);
    fillRow(row, project);
    if (list.children[index] !== row) list.insertBefore(row, list.children[index] || null);
  });
  rows.forEach((row) => row.remove());
  $("#projects-empty").hidden = state.projects.length > 0;
  $("#more-projects-button").hidden = !state.nextPage;
}

function projectRow(id) {
  return el("li", { class: "project-row", "data-id": id },
    el("button", { type: "button", class: "project-item", "data-id": id }),
    el("div", { class: "project-actions" },
      el("button", { type: "button", class: "link-button project-duplicate", "data-id": id }, "Duplicate"),
      el("button", { type: "button", class: "link-button project-delete", "data-id": id }, "Delete")));
}

function fillRow(row, project) {
  const open = Boolean(state.project) && state.project.id === project.id;
  const percent = Math.round(project.progress || 0);
  const left = secondsLeft(project);
  const button = row.querySelector(".project-item");
  if (open) button.setAttribute("aria-current", "true");
  else button.removeAttribute("aria-current");
  const meta = el("span", { class: "project-meta" },
    el("span", { class: `badge badge-${project.status.toLowerCase()}` }, statusWords(project)),
    el("span", {}, `${percent}%`),
    left === null ? null : el("span", {}, remainingWords(left)),
    el("span", {}, `updated ${timeAgo(project.updatedAt)}`));
  const bar = isRunning(project) ? el("span", { class: "mini-bar", "aria-hidden": "true" }, el("span", { style: `width: ${percent}%` })) : null;
  button.replaceChildren(...[el("span", { class: "project-title" }, project.title), meta, bar].filter(Boolean));
  // The visible word first, then what it is about: "Delete “Night trains”".
  row.querySelector(".project-duplicate").setAttribute("aria-label", `Duplicate “${project.title}”`);
  row.querySelector(".project-delete").setAttribute("aria-label", `Delete “${project.title}”`);
}

function timeAgo(iso) {
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds) || seconds < 45) return "just now";
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  const [unit, size] = units.find(([, length]) => seconds >= length) || units[2];
  return new Intl.RelativeTimeFormat("en", { numeric: "auto" }).format(-Math.round(seconds / size), unit);
}
