/* What a status object means: which step it is at, what to call it, how long it has left. */

import { RUNNING } from "./config.js";
import { state } from "./state.js";

export const isRunning = (project) => Boolean(project) && RUNNING.includes(project.status);
export const jobName = (project) => (project.currentStep === "render" ? "Rendering" : "Writing the script");

/* A job that ended back in DRAFT without finishing was cancelled: a finished job sets `completedAt`,
 * a start clears it, and a cancel leaves it cleared. */
export const wasCancelled = (before, after) => isRunning(before) && after.status === "DRAFT" && !after.completedAt;

export function stepOf(project) {
  if (!project || state.editingBrief) return "brief";
  if (project.status === "GENERATING_SCRIPT") return "script";
  if (project.status === "RENDERING") return "render";
  if (project.status === "COMPLETED") return "watch";
  if (project.status === "FAILED") return project.currentStep === "render" ? "render" : "script";
  return project.scriptData ? "review" : "brief";
}

export function panelOf(project, step) {
  if (step === "script" || step === "render") return project.status === "FAILED" ? "failure" : "job-panel";
  return step;
}

export function statusWords(project) {
  if (project.status === "DRAFT") return project.scriptData ? "Script ready" : "Draft";
  const words = { GENERATING_SCRIPT: "Writing the script", RENDERING: "Rendering", COMPLETED: "Video ready" };
  return words[project.status] || "Failed";
}

/* The server's estimate of the seconds left (null: no basis yet; a missing field counts as null),
 * with when it came, so the page can count it down until the next status object brings a new one. */
export function stamped(status) {
  const estimate = status.estimatedSecondsRemaining;
  return { ...status, estimatedSecondsRemaining: Number.isFinite(estimate) ? estimate : null, estimatedAt: Date.now() };
}

export function secondsLeft(project) {
  if (!isRunning(project) || project.estimatedSecondsRemaining == null) return null;
  const gone = Math.floor((Date.now() - project.estimatedAt) / 1000);
  return Math.max(0, project.estimatedSecondsRemaining - gone);
}

export function remainingWords(seconds) {
  if (seconds < 5) return "a few seconds left";
  if (seconds < 90) return `about ${Math.max(5, Math.round(seconds / 5) * 5)} s left`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min left`;
  const [hours, rest] = [Math.floor(minutes / 60), minutes % 60];
  return rest ? `about ${hours} h ${rest} min left` : `about ${hours} h left`;
}

export function titleOf(project) {
  const listed = state.projects.find((item) => item.id === project.id);
  return project.title || (listed ? listed.title : "");
}
