/* Drawing the open project: the timeline, the one panel its step needs, the title and the prices. */

import { API, BRIEF_FIELDS, PANELS, STEPS } from "./config.js";
import { renderConnectionNote } from "./connection.js";
import { renderPrices } from "./credits.js";
import { $, $$, el } from "./dom.js";
import { clearErrors } from "./forms.js";
import { state } from "./state.js";
import { isRunning, jobName, panelOf, remainingWords, secondsLeft, stepOf } from "./status.js";

export function render() {
  const project = state.project;
  const step = stepOf(project);
  const panel = panelOf(project, step);
  renderTimeline(step);
  for (const id of PANELS) document.getElementById(id).hidden = id !== panel;
  for (const video of $$(".panel[hidden] video")) video.pause();
  const draw = { brief: renderBrief, "job-panel": renderJob, review: renderReview, watch: renderWatch, failure: renderFailure };
  draw[panel](project);
  renderPrices(project);
  $("#workspace-title").textContent = project ? project.title : "New video";
  $("#project-tools").hidden = !project;
  document.title = isRunning(project) ? `(${project.progress}%) ${jobName(project)} — videocreation` : "videocreation";
  renderConnectionNote();
}

function renderTimeline(step) {
  const current = STEPS.indexOf(step);
  const status = state.project && state.project.status;
  $$(".timeline li").forEach((item, index) => {
    const done = index < current || (status === "COMPLETED" && index === current);
    const failed = status === "FAILED" && !state.editingBrief && index === current;
    item.classList.toggle("done", done);
    item.classList.toggle("failed", failed);
    if (index === current) item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
    $(".step-state", item).textContent = failed ? " (failed)" : done ? " (done)" : "";
  });
}

function renderBrief(project) {
  $("#back-to-review-button").hidden = !(project && project.status === "DRAFT" && project.scriptData);
  const key = project ? project.id : "new";
  if (state.briefFor === key) return; // keep what the person is typing
  state.briefFor = key;
  const form = $("#brief-form");
  form.reset();
  clearErrors(form);
  if (project) for (const name of BRIEF_FIELDS) form.elements[name].value = project[name];
  updateBriefCount();
}

export function updateBriefCount() {
  $("#brief-count").textContent = `${$("#brief-text").value.length} / 2000`;
}

function renderJob(project) {
  const percent = Math.max(0, Math.min(100, Math.round(project.progress || 0)));
  const bar = $("#job-progress");
  $("#job-title").textContent = project.status === "RENDERING" ? "Rendering the video" : "Writing the script";
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-valuetext", `${percent}% — ${project.progressMessage || "Working"}`);
  $("#job-fill").style.width = `${percent}%`;
  $("#job-percent").textContent = `${percent}%`;
  $("#job-message").textContent = project.progressMessage || "Working…";
  const step = $("#job-step");
  step.hidden = !project.totalSteps;
  step.textContent = `Step ${Math.min(project.completedSteps + 1, project.totalSteps)} of ${project.totalSteps}`;
  renderElapsed();
  renderRemaining();
  renderPrevious($("#job-previous"), project.status === "RENDERING" ? project.previousVideoUrl : null);
}

/* The last finished video, kept while a new render runs and after one is cancelled or fails. */
function renderPrevious(figure, source) {
  const video = $("video", figure);
  figure.hidden = !source;
  if (!source) {
    video.pause();
    return;
  }
  if (video.getAttribute("src") !== source) video.setAttribute("src", source); // the URL names the file
  $(".previous-download", figure).setAttribute("href", source);
}

export function renderElapsed() {
  const project = state.project;
  if (!isRunning(project) || !project.startedAt) return;
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(project.startedAt)) / 1000));
  const [hours, minutes, rest] = [Math.floor(seconds / 3600), Math.floor((seconds % 3600) / 60), seconds % 60];
  const pad = (value) => String(value).padStart(2, "0");
  $("#job-elapsed").textContent = hours ? `${hours}:${pad(minutes)}:${pad(rest)}` : `${minutes}:${pad(rest)}`;
}

/* Counted down each second with Elapsed; like it, outside any live region, so nothing is announced per tick. */
export function renderRemaining() {
  const seconds = secondsLeft(state.project);
  const text = seconds === null ? "" : remainingWords(seconds);
  const remaining = $("#job-remaining");
  if (remaining.textContent !== text) remaining.textContent = text;
  remaining.hidden = !text;
}

function renderReview(project) {
  renderPrevious($("#review-previous"), project.previousVideoUrl);
  const key = project.id + JSON.stringify(project.scriptData);
  if (state.reviewKey === key) return; // keep unsaved edits
  state.reviewKey = key;
  clearErrors($("#script-form"));
  $("#script-saved").textContent = "";
  $("#script-title").value = project.scriptData.title || "";
  const scenes = $("#scenes");
  scenes.dataset.aspect = project.aspectRatio;
  scenes.style.setProperty("--aspect", project.aspectRatio.replace(":", " / "));
  scenes.replaceChildren(...project.scriptData.scenes.map((scene) => sceneItem(project, scene)));
}

function sceneItem(project, scene) {
  const version = encodeURIComponent(project.completedAt || project.version); // a rewrite draws new previews
  const src = `${API}projects/${project.id}/scenes/${scene.index}/preview?v=${version}`;
  const image = el("img", { loading: "lazy", src, alt: scene.visual });
  const figure = el("figure", { class: "scene-preview" }, image);
  image.addEventListener("error", () => figure.classList.add("missing"), { once: true });
  const field = (label, control) => {
    const error = el("p", { class: "field-error", "data-field": control.name, id: `scene-${scene.index}-${control.name}-error` });
    control.setAttribute("aria-describedby", error.id);
    return el("div", { class: "field" }, el("label", {}, el("span", { class: "label" }, label), control), error);
  };
  const text = (name, rows, value) => el("textarea", { name, rows, maxlength: "1000", required: "" }, value);
  const seconds = el("input", { name: "seconds", type: "number", min: "1", max: "20", step: "any", value: String(scene.seconds) });
  const fields = el("div", { class: "scene-fields" }, el("h3", {}, `Scene ${scene.index + 1}`),
    field("Narration", text("narration", "2", scene.narration)),
    field("Visual", text("visual", "3", scene.visual)),
    field("Seconds", seconds));
  return el("li", { class: "scene" }, figure, fields);
}

function renderWatch(project) {
  const source = project.videoUrl; // versioned by its file: a new render, a new address
  const video = $("#watch video");
  if (video.getAttribute("src") !== source) video.setAttribute("src", source);
  $("#download-link").setAttribute("href", source);
}

function renderFailure(project) {
  $("#failure-heading").textContent = `${jobName(project)} failed`;
  $("#failure-message").textContent = (project.error && project.error.message) || "The job stopped with an error.";
  renderPrevious($("#failure-previous"), project.previousVideoUrl);
}
