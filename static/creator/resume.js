/* Coming back: offer to continue each project still in hand (of GET unfinished, those running or in DRAFT; a
 * finished one not yet told about gets its message instead), or none of them for now. "Not now" (or "New
 * project", or Escape) is remembered on the server for each project offered (POST …/dismiss), so no tab or
 * device offers them again until one changes. */

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";
import { isRunning, statusWords } from "./status.js";

/* `choices.open(id)` continues a project; `choices.startNew()` leaves them all for a blank brief. */
export function offerResume(unfinished, choices) {
  const offered = unfinished.filter((project) => isRunning(project) || project.status === "DRAFT");
  if (!offered.length || state.project) return;
  const dialog = $("#resume-dialog");
  const count = offered.length;
  $("#resume-title").textContent =
    count === 1 ? "You have an unfinished video project — continue?" : `You have ${count} unfinished video projects — continue one?`;
  $("#resume-project").replaceChildren(...offered.map(resumeItem));
  dialog.returnValue = "";
  dialog.addEventListener("close", () => decide(dialog.returnValue, offered, choices), { once: true });
  dialog.showModal();
  $("#resume-project button").focus();
}

function resumeItem(project) {
  const progress = isRunning(project) ? `, ${project.progress}%` : "";
  return el("li", { class: "resume-item" },
    el("p", { class: "resume-name" }, el("strong", {}, project.title), el("span", { class: "hint" }, `${statusWords(project)}${progress}`)),
    el("button", { type: "submit", value: `open:${project.id}`, "aria-label": `Continue “${project.title}”` }, "Continue"));
}

function decide(answer, offered, choices) {
  if (answer.startsWith("open:")) return choices.open(answer.slice("open:".length));
  for (const project of offered) {
    api("POST", `projects/${project.id}/dismiss`).catch(() => {}); // one gone meanwhile has nothing to offer
  }
  if (answer === "new") choices.startNew();
}
