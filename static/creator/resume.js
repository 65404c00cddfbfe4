/* Coming back: offer to continue an unfinished project (one still running, or a draft). */

import { api } from "./api.js";
import { $ } from "./dom.js";
import { state } from "./state.js";
import { isRunning, statusWords } from "./status.js";

/* `choices.open(id)` continues the project; `choices.startNew()` leaves it for a blank brief. */
export async function offerResume(unfinished, choices) {
  const candidate = unfinished.find((project) => isRunning(project) || project.status === "DRAFT");
  if (!candidate || state.project) return;
  let project;
  try {
    project = (await api("GET", `projects/${candidate.id}`)).data; // status objects carry no title
  } catch (error) {
    return;
  }
  if (state.project) return; // the person opened something meanwhile
  const dialog = $("#resume-dialog");
  const progress = isRunning(project) ? `, ${project.progress}%` : "";
  $("#resume-project").textContent = `“${project.title}” — ${statusWords(project)}${progress}`;
  dialog.returnValue = "";
  const choose = () => (dialog.returnValue === "continue" ? choices.open(project.id) : choices.startNew());
  dialog.addEventListener("close", choose, { once: true });
  dialog.showModal();
  $("#resume-continue").focus();
}
