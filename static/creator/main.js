/* The creator page: brief → script → review → render → watch (the API contract: shared/API.md).
 * Plain ES modules, no build step; this one wires the page together. Each concern has its own module:
 * state, api, status (what a status means), render (the open project), forms, log, progress-stream
 * (Server-Sent Events, polling as the fallback), notifications, projects-list, credits, resume, and
 * actions (what people do). */

import {
  cancelJob,
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
import { readLiveUpdates, setLiveUpdates, startPolling } from "./progress-stream.js";
import { loadProjects, refreshIfOthersRun, renderProjects } from "./projects-list.js";
import { render, renderElapsed, renderRemaining, updateBriefCount } from "./render.js";
import { offerResume } from "./resume.js";
import { state } from "./state.js";
import { isRunning } from "./status.js";

function bindEvents() {
  const on = (selector, type, handler) => $(selector).addEventListener(type, handler);
  const busyClicks = {
    "#cancel-button": cancelJob,
    "#save-script-button": saveScript,
    "#render-button": renderVideo,
    "#rewrite-button": rewriteScript,
    "#render-again-button": () => startStep("render", $("#watch")),
    "#retry-button": () => startStep(state.project.currentStep || "script", $("#failure")),
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
  };
  for (const [selector, handler] of Object.entries(clicks)) on(selector, "click", handler);
  on("#brief-form", "submit", submitBrief);
  on("#brief-text", "input", updateBriefCount);
  on("#live-updates", "change", (event) => setLiveUpdates(event.target.checked));
  on("#projects-list", "click", (event) => {
    const item = event.target.closest(".project-item");
    if (item) openProject(item.dataset.id);
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
  setInterval(refreshIfOthersRun, POLL_MS * 4);
  loadBalance();
  try {
    const [, unfinished] = await Promise.all([loadProjects(), api("GET", "unfinished")]);
    unfinished.data.forEach(announceIfDue); // jobs that finished while the person was away
    await offerResume(unfinished.data, { open: openProject, startNew });
  } catch (error) {
    // Without the unfinished list the page still works from a blank brief.
  }
}

if (root) init();
