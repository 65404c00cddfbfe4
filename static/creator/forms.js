/* The forms: reading what the person typed, and showing the API's errors beside the inputs they are about. */

import { BRIEF_FIELDS, NUMBER_FIELDS } from "./config.js";
import { $, $$ } from "./dom.js";
import { state } from "./state.js";

export function clearErrors(scope) {
  for (const alert of $$("[role=alert]", scope)) alert.textContent = "";
  for (const slot of $$(".field-error", scope)) slot.textContent = "";
  for (const input of $$("[aria-invalid]", scope)) input.removeAttribute("aria-invalid");
}

/* The error's `detail` goes to the form's alert as the server wrote it; each field's messages go beside their
 * input. A message with no input to sit by stays in the slot for its top-level field, if there is one. */
export function showErrors(scope, error) {
  $("[role=alert]", scope).textContent = error.message;
  const unplaced = new Map();
  for (const [path, messages] of fieldMessages(error.fields)) {
    if (placeMessages(scope, path, messages)) continue;
    const top = path.split(/[.[]/)[0];
    unplaced.set(top, (unplaced.get(top) || []).concat(messages));
  }
  for (const [field, messages] of unplaced) {
    const slot = $(`.field-error[data-field="${CSS.escape(field)}"]`, scope);
    if (slot) slot.textContent = messages.join(" ");
    const input = scope.elements && scope.elements[field];
    if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
  }
  const first = $("[aria-invalid=true]", scope);
  if (first) first.focus();
}

/* `fields` as [path, messages] pairs, whatever its depth: {"title": [...]}, nested
 * {"scriptData": {"scenes": [{}, {"seconds": [...]}]}} or {"scenes": {"1": …}}, or flat "scriptData.scenes[1].seconds". */
function fieldMessages(fields, path = "") {
  if (typeof fields === "string") return [[path, [fields]]];
  if (Array.isArray(fields) && fields.every((item) => typeof item === "string")) return [[path, fields]];
  const entries = Array.isArray(fields) ? fields.map((item, index) => [String(index), item]) : Object.entries(fields || {});
  return entries.flatMap(([key, value]) => {
    const step = /^\d+$/.test(key) ? `[${key}]` : path && !key.startsWith("[") ? `.${key}` : key;
    return fieldMessages(value, path + step);
  });
}

/* Put the messages beside the input `path` names, if the page has it; true if they found their place. */
function placeMessages(scope, path, messages) {
  const scene = path.match(/^scriptData\.scenes\[(\d+)\]\.(\w+)$/);
  const script = path.match(/^scriptData\.(\w+)$/);
  if (scene) return placeBeside($$("#scenes .scene")[Number(scene[1])], scene[2], messages);
  if (script) return placeBeside($("#script-form"), script[1], messages);
  if (path === "scriptData") return placeScriptLines(messages);
  return false;
}

function placeBeside(scope, name, messages) {
  const slot = scope && $(`.field-error[data-field="${CSS.escape(name)}"]`, scope);
  const input = scope && $(`[name="${CSS.escape(name)}"]`, scope);
  if (!slot || !input) return false;
  slot.textContent = messages.join(" ");
  input.setAttribute("aria-invalid", "true");
  return true;
}

/* Script errors that name their place in their text ("scenes: 1: narration: …"); true if each found its place. */
function placeScriptLines(messages) {
  const unplaced = messages.filter((message) => {
    const [, index, name, text] = message.match(/^(?:scenes: (\d+): )?(\w+): (.+)$/) || [];
    const scope = index === undefined ? $("#script-form") : $$("#scenes .scene")[Number(index)];
    return !(name && placeBeside(scope, name, [text]));
  });
  const slot = $('.field-error[data-field="scriptData"]');
  if (slot && unplaced.length) slot.textContent = unplaced.join(" ");
  return true;
}

export function readBrief() {
  const value = (name) => $("#brief-form").elements[name].value.trim();
  const typed = (name) => (NUMBER_FIELDS.includes(name) && value(name) !== "" ? Number(value(name)) : value(name));
  return Object.fromEntries(BRIEF_FIELDS.map((name) => [name, typed(name)]));
}

function scriptShape(script) {
  const scenes = script.scenes.map(({ index, narration, visual, seconds }) => ({ index, narration, visual, seconds }));
  return { title: script.title, scenes };
}

export function readScript() {
  const scenes = $$("#scenes .scene").map((item, index) => ({
    index,
    narration: $("[name=narration]", item).value.trim(),
    visual: $("[name=visual]", item).value.trim(),
    seconds: Number($("[name=seconds]", item).value),
  }));
  return scriptShape({ title: $("#script-title").value.trim(), scenes });
}

/* Whether the script fields differ from the script the server has: edits not saved yet. */
export function scriptChanged() {
  const saved = state.project && state.project.scriptData;
  return Boolean(saved) && JSON.stringify(readScript()) !== JSON.stringify(scriptShape(saved));
}

/* The button stays disabled while its work runs, so a double click sends one request. */
export async function withBusy(button, work) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
