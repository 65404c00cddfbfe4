/* The creator page: brief → script → review → render → watch (the API contract: shared/API.md).
 * Plain ES modules, no build step; this one wires the page together. Each concern has its own module:
 * state, api, status (what a status means), render (the open project), forms, log, all-projects-stream (one
 * Server-Sent Events connection for every project), progress-stream (following the open job; polling as the
 * fallback), notifications, projects-list, credits, resume, confirm-dialog, and actions (what people do). */

import { openStream } from "./all-projects-stream.js";
import {
  cancelJob,
  deleteProject,
  duplicateProject,
  editBrief,
  openProject,
  renderVideo,
  rewriteScript,
  saveScript,
  showReview,
  startNew,
  startStep,
  submitBrief,
} from "./actions.js";
import { api } from "./api.js";
import { POLL_MS, root } from "./config.js";
import { loadBalance, renderPrices } from "./credits.js";
import { $ } from "./dom.js";
import { withBusy } from "./forms.js";
import { announceIfDue } from "./notifications.js";
import { liveWanted, readLiveUpdates, setLiveUpdates, startPolling } from "./progress-stream.js";
import { loadProjects, refreshIfOthersRun, renderProjects } from "./projects-list.js";
import { render, renderElapsed, renderRemaining, updateBriefCount } from "./render.js";
import { offerResume } from "./resume.js";
import { state } from "./state.js";
import { isRunning } from "./status.js";
import { setUpWebhooks } from "./webhooks.js";

function bindEvents() {
  const on = (selector, type, handler) => $(selector).addEventListener(type, handler);
  const busyClicks = {
    "#cancel-button": cancelJob,
    "#save-script-button": saveScript,
    "#render-button": renderVideo,
    "#rewrite-button": rewriteScript,
    "#render-again-button": () => startStep("render", $("#watch")),
    "#retry-button": () => startStep(state.project.currentStep || "script", $("#failure")),
    "#duplicate-button": () => duplicateProject(state.project.id),
  };
  for (const [selector, work] of Object.entries(busyClicks)) {
    on(selector, "click", (event) => withBusy(event.currentTarget, work));
  }
  const clicks = {
    "#edit-brief-button": editBrief,
    "#failure-edit-brief-button": editBrief,
    "#back-to-review-button": showReview,
    "#watch-new-button": startNew,
    "#new-video-button": startNew,
    "#more-projects-button": () => loadProjects(true),
    "#delete-button": () => deleteProject(state.project.id),
  };
  for (const [selector, handler] of Object.entries(clicks)) on(selector, "click", handler);
  on("#brief-form", "submit", submitBrief);
  on("#brief-text", "input", updateBriefCount);
  on("#live-updates", "change", (event) => setLiveUpdates(event.target.checked));
  on("#projects-list", "click", (event) => {
    const button = event.target.closest("button[data-id]");
    if (!button) return;
    if (button.classList.contains("project-delete")) deleteProject(button.dataset.id);
    else if (button.classList.contains("project-duplicate")) withBusy(button, () => duplicateProject(button.dataset.id));
    else openProject(button.dataset.id);
  });
  on("#scenes", "input", (event) => {
    $("#script-saved").textContent = "Unsaved changes.";
    if (event.target.name === "seconds") renderPrices(state.project);
    if (event.target.name === "visual") $("img", event.target.closest(".scene")).alt = event.target.value;
  });
  on("#script-title", "input", () => {
    $("#script-saved").textContent = "Unsaved changes.";
  });
  on("#toasts", "click", (event) => {
    const item = event.target.closest(".toast");
    const open = event.target.closest(".toast-open");
    if (open || event.target.closest(".toast-close")) item.remove();
    if (open) openProject(open.dataset.id);
  });
  document.addEventListener("visibilitychange", () => {
    // Timers slept in the background; a stream did not.
    if (!document.hidden && isRunning(state.project) && !state.stream) startPolling(0);
  });
}

async function init() {
  window.videocreation = { state, POLL_MS };
  readLiveUpdates();
  bindEvents();
  render();
  let ticks = 0;
  setInterval(() => {
    renderElapsed();
    renderRemaining();
    ticks += 1;
    if (ticks % 30 === 0) renderProjects(); // "updated 2 minutes ago" moves on
  }, 1000);
  setInterval(refreshIfOthersRun, POLL_MS); // while the stream is off, or failed
  if (liveWanted()) openStream();
  loadBalance();
  setUpWebhooks();
  try {
    const [, unfinished] = await Promise.all([loadProjects(), api("GET", "unfinished")]);
    unfinished.data.forEach(announceIfDue); // jobs that finished while the person was away
    offerResume(unfinished.data, { open: openProject, startNew: startNewProject });
  } catch (error) {
    // Without the unfinished list the page still works from a blank brief.
  }
  root.dataset.loaded = "true"; // the list is drawn and the resume question asked, or not
}

function startNewProject() {
  startNew();
  $("#brief-title").focus();
}

if (root) init();
