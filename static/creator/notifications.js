/* Telling people: messages on the page, the browser's notifications, and "your job finished" exactly once.
 *
 * Messages sit in the page's flow at the top of the workspace, never over it: a message must not hide the
 * controls under it (on a phone two stacked ones covered the buttons). A message about a project's finished
 * (or cancelled) job goes by itself when that project moves on, e.g. when it starts rendering again. */

import { api } from "./api.js";
import { ANNOUNCED_KEY } from "./config.js";
import { $, $$, el } from "./dom.js";
import { state } from "./state.js";
import { isRunning, jobName, titleOf } from "./status.js";

const FADE_MS = 15000;

/* Adds `key` to the finished jobs this browser has announced; true if it was not there yet.
 * Every tab and every reload shares the list; `notified` on the server guards the rest. */
function firstAnnouncement(key) {
  try {
    const keys = JSON.parse(localStorage.getItem(ANNOUNCED_KEY) || "[]");
    if (keys.includes(key)) return false;
    localStorage.setItem(ANNOUNCED_KEY, JSON.stringify([...keys, key].slice(-200)));
  } catch (error) {
    // Storage may be refused (private windows); then only `notified` guards.
  }
  return true;
}

export function announceIfDue(project) {
  if (isRunning(project) || !project.completedAt || project.notified) return;
  const key = `${project.id}:${project.completedAt}`;
  if (firstAnnouncement(key)) {
    const [headline, kind] = finishMessage(project);
    toast(headline, titleOf(project), kind, project);
    notifyBrowser(headline, titleOf(project), key);
  }
  api("POST", `projects/${project.id}/notified`).catch(() => {});
}

function finishMessage(project) {
  if (project.status === "COMPLETED") return ["Your video is ready", "success"];
  if (project.status !== "FAILED") return ["Your script is ready", "success"];
  const reason = (project.error && project.error.message) || "the job stopped with an error.";
  return [`${jobName(project)} failed: ${reason}`, "error"];
}

/* A cancelled job: nothing was lost, and this is what is still there. Answers the message. */
export function sayCancelled(project) {
  const render = project.currentStep === "render";
  const headline = render ? "Render cancelled — nothing lost" : "Script job cancelled — nothing lost";
  let kept;
  if (render) kept = project.previousVideoUrl ? "Your script and your last video are as they were." : "Your script is as it was.";
  else kept = project.scriptData ? "Your brief and your last script are as they were." : "Your brief is as it was.";
  return toast(headline, kept, "info", project);
}

export function askNotificationPermission() {
  if ("Notification" in window && Notification.permission === "default") {
    Promise.resolve(Notification.requestPermission()).catch(() => {});
  }
}

function notifyBrowser(headline, body, tag) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    new Notification(headline, { body, tag });
  } catch (error) {
    // Some mobile browsers show notifications only through a service worker.
  }
}

/* A message; `about`, the status object of the project it is about (an "Open" button unless it is open). */
export function toast(headline, detail, kind, about = null) {
  const projectId = about && about.id;
  const openable = projectId && !(state.project && state.project.id === projectId);
  const tie = about ? { "data-project": projectId, "data-version": about.version, "data-finished": about.completedAt || "" } : {};
  const item = el("div", { class: `toast toast-${kind}`, ...tie },
    el("p", { class: "toast-text" }, el("strong", {}, headline), detail ? el("span", {}, detail) : null),
    openable ? el("button", { type: "button", class: "small toast-open", "data-id": projectId }, "Open") : null,
    el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×"));
  $("#toasts").append(item);
  if (kind !== "error") setTimeout(() => item.remove(), FADE_MS);
  return item;
}

/* The messages about this project's last job, once it has moved on: a new job runs, or another one ended.
 * Only a newer status counts: an answer that was on its way before the message came says nothing new. */
export function dropStaleMessages(status) {
  for (const item of $$("#toasts .toast[data-project]")) {
    if (item.dataset.project !== String(status.id) || !(status.version > Number(item.dataset.version))) continue;
    if (isRunning(status) || (status.completedAt || "") !== item.dataset.finished) item.remove();
  }
}
