/* What people do on the page: write a brief, edit and render a script, cancel, open, duplicate or delete a
 * project. */

import { api } from "./api.js";
import { confirmDialog } from "./confirm-dialog.js";
import { loadBalance, refusedStart, renderPrices } from "./credits.js";
import { $, $$, bringIntoView } from "./dom.js";
import { clearErrors, readBrief, readScript, scriptChanged, showErrors, withBusy } from "./forms.js";
import { clearLog, fetchLog, markLogStart } from "./log.js";
import { announceIfDue, askNotificationPermission, toast } from "./notifications.js";
import { applyStatus, follow, mergeStatus, pollStatus, stopFollowing } from "./progress-stream.js";
import { forgetListed, loadProjects, renderProjects } from "./projects-list.js";
import { render } from "./render.js";
import { state } from "./state.js";
import { isRunning, stamped, titleOf } from "./status.js";

export async function submitBrief(event) {
  event.preventDefault();
  askNotificationPermission();
  const form = $("#brief-form");
  await withBusy($("#write-script-button"), async () => {
    clearErrors(form);
    try {
      const current = state.project;
      const saved = current
        ? await api("PATCH", `projects/${current.id}`, readBrief())
        : await api("POST", "projects", readBrief());
      state.project = saved.data;
      state.briefFor = saved.data.id;
      loadProjects();
      startJob((await api("POST", `projects/${saved.data.id}/script`)).data);
    } catch (error) {
      showErrors(form, refusedStart("script", error));
    }
  });
}

export async function saveScript() {
  const form = $("#script-form");
  clearErrors(form);
  $("#script-saved").textContent = "";
  try {
    const { data } = await api("PATCH", `projects/${state.project.id}/script`, { scriptData: readScript() });
    mergeStatus(data);
    state.reviewKey = data.id + JSON.stringify(data.scriptData);
    renderPrices(state.project);
    $("#script-saved").textContent = "Script saved.";
    return true;
  } catch (error) {
    showErrors(form, error);
    return false;
  }
}

export async function renderVideo() {
  askNotificationPermission();
  if (scriptChanged() && !(await saveScript())) return;
  await startStep("render", $("#review"));
}

/* A new script replaces the one in the fields: edits not saved yet are lost, so ask first. */
export async function rewriteScript() {
  if (scriptChanged() && !(await confirmDialog($("#rewrite-dialog")))) return;
  await startStep("script", $("#review"));
}

/* Start the open project's script or render job; errors go to the panel's alert. */
export async function startStep(step, panel) {
  askNotificationPermission();
  const project = state.project;
  try {
    startJob((await api("POST", `projects/${project.id}/${step}`)).data);
  } catch (error) {
    if (error.code !== "conflict") return showErrors(panel, refusedStart(step, error));
    toast(error.message, titleOf(project), "info"); // another tab moved it on: show where it is now
    openProject(project.id);
  }
}

/* No question asked: a cancel loses nothing (the project goes back to DRAFT as it was), and says so. */
export async function cancelJob() {
  try {
    applyStatus((await api("POST", `projects/${state.project.id}/cancel`)).data);
  } catch (error) {
    if (error.code === "conflict") return pollStatus(); // it ended meanwhile
    showErrors($("#job-panel"), error);
  }
}

/* A job has started: follow it at once (its first status now, not a poll later) and show its bar. */
function startJob(status) {
  // The review is drawn afresh from the server's script when the job ends: a rewrite replaces the edits.
  Object.assign(state, { editingBrief: false, fellBack: false, reviewKey: null });
  clearErrors($("#job-panel"));
  clearLog();
  mergeStatus(status);
  render();
  markLogStart(status.version);
  follow(0);
  loadProjects();
  loadBalance(); // the job was charged as it started
  bringIntoView($("#job-progress"));
}

export function editBrief() {
  state.editingBrief = true;
  render();
  $("#brief-title").focus();
}

export function showReview() {
  state.editingBrief = false;
  render();
}

function leaveOpenProject() {
  stopFollowing();
  state.generation += 1;
  Object.assign(state, { editingBrief: false, etag: null, logOffset: 0, logFrom: { seq: 0, offset: 0 }, logSeq: 0, fellBack: false });
  Object.assign(state, { briefFor: null, reviewKey: null });
  clearLog();
}

export function startNew() {
  leaveOpenProject();
  state.project = null;
  render();
  renderProjects();
}

export async function openProject(id) {
  let project;
  try {
    project = (await api("GET", `projects/${id}`)).data;
  } catch (error) {
    return toast(error.message, "", "error");
  }
  leaveOpenProject();
  state.project = stamped(project);
  render();
  renderProjects();
  bringIntoView($("#workspace-title")); // opened from the list, below the workspace on a phone
  if (isRunning(project)) return follow(); // with its whole log
  state.logSeq = project.version; // a job started elsewhere shows its own lines only
  fetchLog(false); // skip the old lines, so the next job's log starts clean
  announceIfDue(project);
}

/* The project's title as the page knows it: open, or listed. */
function titleFor(id) {
  const project = state.project && state.project.id === id ? state.project : state.projects.find((item) => item.id === id);
  return project ? project.title : "";
}

/* After asking: the project goes from the server and the list, and the workspace if it was open. The API's
 * refusal (a job still running) is shown in its own words. */
export async function deleteProject(id) {
  const title = titleFor(id);
  if (!(await confirmDialog($("#delete-dialog"), { title }))) return;
  try {
    await api("DELETE", `projects/${id}`);
  } catch (error) {
    if (error.status !== 404) return toast(error.message, title, "error"); // 404: gone already
  }
  for (const item of $$(`#toasts .toast[data-project="${CSS.escape(id)}"]`)) item.remove();
  if (state.project && state.project.id === id) startNew();
  forgetListed(id);
  toast("Project deleted", title, "info");
}

/* A new draft with the same brief and script, opened at once. */
export async function duplicateProject(id) {
  let copy;
  try {
    copy = (await api("POST", `projects/${id}/duplicate`)).data;
  } catch (error) {
    return toast(error.message, titleFor(id), "error");
  }
  loadProjects();
  await openProject(copy.id);
}
