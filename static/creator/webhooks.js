/* Settings → Webhooks: the person's endpoints (the API: webhooks/api.py), adding one, turning it off and on,
 * a new signing secret, deleting it; and, at load, a message about each endpoint turned off after failing.
 *
 * A secret is in the API's answer only when it is made (add, rotate): the page keeps it in memory until the
 * person hides it, so a reload shows it no more. Messages sit in #toasts, in the page's flow, as every message
 * of the page does: none covers a control. */

import { api } from "./api.js";
import { confirmDialog } from "./confirm-dialog.js";
import { $, $$, bringIntoView, el } from "./dom.js";
import { clearErrors, showErrors, withBusy } from "./forms.js";
import { toast } from "./notifications.js";
import { toggleDeliveries, when } from "./webhook-deliveries.js";

// How sending.py words an endpoint it turned off because every delivery failed for WEBHOOK_DISABLE_AFTER_SECONDS.
const FAILED_TOO_LONG = "Turned off: every delivery failed";
const endpoints = new Map(); // by id, as the API last answered
const secrets = new Map(); // by id: {secret, note}, shown until hidden; never stored

export async function setUpWebhooks() {
  const section = $("#webhooks");
  if (!section) return;
  $("#webhook-form").addEventListener("submit", addEndpoint);
  $("#webhook-list").addEventListener("click", onListClick);
  $("#webhook-list").addEventListener("change", onSwitch);
  try {
    const { data } = await api("GET", "webhooks");
    data.forEach((endpoint) => endpoints.set(endpoint.id, endpoint));
    renderList();
    data.filter(failedTooLong).forEach(showTurnedOffNotice);
  } catch (error) {
    $("#webhooks-error").textContent = `Your webhook endpoints could not be loaded: ${error.message}`;
  }
  section.dataset.loaded = "true";
}

function failedTooLong(endpoint) {
  return !endpoint.enabled && endpoint.disabledReason.startsWith(FAILED_TOO_LONG);
}

async function addEndpoint(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await withBusy($("#webhook-add-button"), async () => {
    clearErrors(form);
    try {
      const { data } = await api("POST", "webhooks", readForm(form));
      const { secret, ...endpoint } = data;
      endpoints.set(endpoint.id, endpoint);
      secrets.set(endpoint.id, { secret, note: "Your receiver checks each message's signature with it." });
      form.reset();
      $("#webhook-add").open = false;
      renderList();
      revealSecret(endpoint.id);
    } catch (error) {
      showErrors(form, error);
    }
  });
}

function readForm(form) {
  const description = form.elements.description.value.trim();
  const events = $$("input[name=events]:checked", form).map((box) => box.value);
  return { url: form.elements.url.value.trim(), events, ...(description ? { description } : {}) };
}

function renderList() {
  const list = $("#webhook-list");
  const rows = new Map($$(".webhook", list).map((row) => [row.dataset.id, row]));
  for (const [id, row] of rows) if (!endpoints.has(id)) row.remove();
  for (const endpoint of endpoints.values()) {
    const row = rows.get(endpoint.id) || list.appendChild(endpointRow(endpoint));
    renderEndpoint(row, endpoint);
  }
  $("#webhooks-empty").hidden = endpoints.size > 0;
}

/* The parts that stay while the endpoint changes: its switch, buttons and open deliveries. */
function endpointRow(endpoint) {
  const id = endpoint.id;
  return el("li", { class: "webhook", "data-id": id },
    el("div", { class: "webhook-summary" }),
    el("div", { class: "switch" },
      el("input", { id: `webhook-on-${id}`, class: "webhook-enabled", type: "checkbox", role: "switch" }),
      el("label", { for: `webhook-on-${id}` }, "Send messages", el("span", { class: "visually-hidden" }, ` to ${endpoint.url}`))),
    el("div", { class: "webhook-secret-slot" }),
    el("p", { class: "form-error", role: "alert" }),
    el("div", { class: "webhook-actions" },
      el("button", { type: "button", class: "small webhook-deliveries-button", "aria-expanded": "false", "aria-controls": `webhook-deliveries-${id}` }, "Deliveries"),
      el("button", { type: "button", class: "small webhook-rotate" }, "New secret"),
      el("button", { type: "button", class: "small quiet-danger webhook-delete" }, "Delete")),
    el("div", { class: "webhook-deliveries", id: `webhook-deliveries-${id}`, hidden: "" }));
}

function renderEndpoint(row, endpoint) {
  const on = endpoint.enabled;
  $(".webhook-summary", row).replaceChildren(...[
    el("p", { class: "webhook-url" }, endpoint.url),
    endpoint.description ? el("p", { class: "webhook-description" }, endpoint.description) : null,
    el("p", { class: "webhook-meta" },
      el("span", { class: `badge ${on ? "badge-on" : "badge-off"}` }, on ? "On" : "Off"),
      el("span", {}, endpoint.events.join(", "))),
    ...troubles(endpoint),
  ].filter(Boolean));
  $(".webhook-enabled", row).checked = on;
  $(".webhook-secret-slot", row).replaceChildren(...(secrets.has(endpoint.id) ? [secretBox(endpoint.id)] : []));
  // The visible word first, then what it is about: "Delete https://…".
  for (const [selector, name] of [[".webhook-deliveries-button", "Deliveries to"], [".webhook-rotate", "New secret for"], [".webhook-delete", "Delete"]]) {
    $(selector, row).setAttribute("aria-label", `${name} ${endpoint.url}`);
  }
}

/* Why it is off, and since when it has been failing: what the person needs to fix the receiver. */
function troubles(endpoint) {
  const lines = [];
  if (!endpoint.enabled) lines.push(el("p", { class: "webhook-trouble" }, `${endpoint.disabledReason} (${when(endpoint.disabledAt)})`));
  if (endpoint.failingSince) lines.push(el("p", { class: "webhook-trouble" }, `Failing since ${when(endpoint.failingSince)}.`));
  return lines;
}

function secretBox(id) {
  const { secret, note } = secrets.get(id);
  const label = `webhook-secret-${id}`;
  return el("div", { class: "webhook-secret", role: "status" },
    el("p", { class: "webhook-secret-label", id: label }, "Signing secret"),
    el("div", { class: "webhook-secret-row" },
      // Whole, wrapped and selectable: a field would cut it off in the narrow sidebar.
      el("code", { class: "webhook-secret-value", "aria-labelledby": label }, secret),
      el("button", { type: "button", class: "small webhook-copy" }, "Copy")),
    el("p", { class: "hint" }, `Copy it now: it will not be shown again. ${note}`),
    el("button", { type: "button", class: "link-button webhook-secret-hide" }, "I have copied it"));
}

function revealSecret(id) {
  const button = $(`.webhook[data-id="${CSS.escape(id)}"] .webhook-copy`);
  bringIntoView(button);
  button.focus();
}

async function onListClick(event) {
  const button = event.target.closest("button");
  const row = button && button.closest(".webhook");
  if (!row) return;
  const id = row.dataset.id;
  if (button.classList.contains("webhook-copy")) return copySecret(button, row);
  if (button.classList.contains("webhook-secret-hide")) {
    secrets.delete(id);
    return renderList();
  }
  if (button.classList.contains("webhook-deliveries-button")) return toggleDeliveries(button, id, $(".webhook-deliveries", row));
  if (button.classList.contains("webhook-rotate")) return withBusy(button, () => rotateSecret(row, endpoints.get(id)));
  if (button.classList.contains("webhook-delete")) return withBusy(button, () => deleteEndpoint(row, endpoints.get(id)));
}

async function copySecret(button, row) {
  const secret = $(".webhook-secret-value", row);
  try {
    await navigator.clipboard.writeText(secret.textContent);
  } catch (error) {
    // Outside a secure context (plain http) there is no clipboard API; a selection still copies.
    const range = document.createRange();
    range.selectNodeContents(secret);
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    document.execCommand("copy");
  }
  button.textContent = "Copied";
}

async function onSwitch(event) {
  const box = event.target.closest(".webhook-enabled");
  if (!box) return;
  const row = box.closest(".webhook");
  box.disabled = true;
  try {
    await setEnabled(row.dataset.id, box.checked);
  } catch (error) {
    box.checked = !box.checked;
    $("[role=alert]", row).textContent = error.message;
  } finally {
    box.disabled = false;
  }
}

/* Turns the endpoint on or off; failures are thrown, for the caller to show where the person looked. */
async function setEnabled(id, enabled) {
  const { data } = await api("PATCH", `webhooks/${id}`, { enabled });
  endpoints.set(id, data);
  clearErrors($(`.webhook[data-id="${CSS.escape(id)}"]`));
  renderList();
  if (enabled) for (const notice of $$(`#toasts [data-webhook="${CSS.escape(id)}"]`)) notice.remove();
}

async function rotateSecret(row, endpoint) {
  if (!(await confirmDialog($("#webhook-rotate-dialog"), { url: endpoint.url }))) return;
  clearErrors(row);
  try {
    const { data } = await api("POST", `webhooks/${endpoint.id}/rotate-secret`);
    const { secret, ...rotated } = data;
    endpoints.set(rotated.id, rotated);
    const until = rotated.previousSecretExpiresAt;
    const note = `The old secret keeps working ${forHowLong(until)} (until ${when(until)}), so move your receiver to the new one before then.`;
    secrets.set(rotated.id, { secret, note });
    renderList();
    revealSecret(rotated.id);
  } catch (error) {
    $("[role=alert]", row).textContent = error.message;
  }
}

async function deleteEndpoint(row, endpoint) {
  if (!(await confirmDialog($("#webhook-delete-dialog"), { url: endpoint.url }))) return;
  clearErrors(row);
  try {
    await api("DELETE", `webhooks/${endpoint.id}`);
  } catch (error) {
    if (error.status !== 404) {
      $("[role=alert]", row).textContent = error.message;
      return;
    }
  }
  endpoints.delete(endpoint.id);
  secrets.delete(endpoint.id);
  renderList();
  for (const notice of $$(`#toasts [data-webhook="${CSS.escape(endpoint.id)}"]`)) notice.remove();
  toast("Endpoint deleted", endpoint.url, "info");
}

/* Shaped as the page's other messages (main.js dismisses any .toast by its ×); it stays until dealt with. */
function showTurnedOffNotice(endpoint) {
  const turnOn = el("button", { type: "button", class: "small primary" }, "Turn back on");
  const open = el("button", { type: "button", class: "small" }, "Open Webhooks settings");
  const alert = el("p", { class: "form-error", role: "alert" });
  const notice = el("div", { class: "toast toast-error webhook-notice", "data-webhook": endpoint.id },
    el("div", { class: "toast-text" },
      el("strong", {}, "A webhook endpoint was turned off"),
      el("span", { class: "webhook-url" }, endpoint.url),
      el("span", {}, endpoint.disabledReason),
      el("div", { class: "webhook-notice-actions" }, turnOn, open),
      alert),
    el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×"));
  turnOn.addEventListener("click", () => withBusy(turnOn, async () => {
    try {
      await setEnabled(endpoint.id, true);
      toast("Webhook endpoint back on", endpoint.url, "success");
    } catch (error) {
      alert.textContent = error.message;
    }
  }));
  open.addEventListener("click", () => openSettings(endpoint.id));
  $("#toasts").append(notice);
}

function openSettings(id) {
  const row = $(`.webhook[data-id="${CSS.escape(id)}"]`) || $("#webhooks");
  row.scrollIntoView({ block: "center" });
  const control = $(".webhook-enabled", row);
  if (control) control.focus({ preventScroll: true });
}

function forHowLong(untilIso) {
  const hours = Math.round((Date.parse(untilIso) - Date.now()) / 3600000);
  if (hours === 24) return "for a day";
  if (hours >= 1) return `for ${hours} hour${hours === 1 ? "" : "s"}`;
  return "for a little while";
}
