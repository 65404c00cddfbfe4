/* "Your projects": the list beside the workspace, newest first, with each running job's bar.
 * Today it is read from GET projects when something may have moved; `updateListed` is where a status from
 * anywhere (the open job's stream, or one stream for every project) reaches it. */

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

/* A newer status of a listed project. */
export function updateListed(status) {
  const index = state.projects.findIndex((item) => item.id === status.id);
  if (index < 0) return;
  state.projects[index] = { ...state.projects[index], ...stamped(status) };
  renderProjects();
}

export function refreshIfOthersRun() {
  const openId = state.project && state.project.id;
  if (state.projects.some((project) => project.id !== openId && isRunning(project))) loadProjects();
}

export function renderProjects() {
  const focused = document.activeElement && document.activeElement.closest(".project-item");
  $("#projects-list").replaceChildren(...state.projects.map(projectItem));
  $("#projects-empty").hidden = state.projects.length > 0;
  $("#more-projects-button").hidden = !state.nextPage;
  const again = focused && $(`.project-item[data-id="${CSS.escape(focused.dataset.id)}"]`);
  if (again) again.focus();
}

function projectItem(project) {
  const open = Boolean(state.project) && state.project.id === project.id;
  const percent = Math.round(project.progress || 0);
  const left = secondsLeft(project);
  const meta = el("span", { class: "project-meta" },
    el("span", { class: `badge badge-${project.status.toLowerCase()}` }, statusWords(project)),
    el("span", {}, `${percent}%`),
    left === null ? null : el("span", {}, remainingWords(left)),
    el("span", {}, `updated ${timeAgo(project.updatedAt)}`));
  const button = el("button", { type: "button", class: "project-item", "data-id": project.id, "aria-current": open ? "true" : null },
    el("span", { class: "project-title" }, project.title), meta,
    isRunning(project) ? el("span", { class: "mini-bar", "aria-hidden": "true" }, el("span", { style: `width: ${percent}%` })) : null);
  return el("li", {}, button);
}

function timeAgo(iso) {
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds) || seconds < 45) return "just now";
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  const [unit, size] = units.find(([, length]) => seconds >= length) || units[2];
  return new Intl.RelativeTimeFormat("en", { numeric: "auto" }).format(-Math.round(seconds / size), unit);
}
