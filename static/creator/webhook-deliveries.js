/* An endpoint's recent deliveries under it in Settings → Webhooks: each message with every attempt (the
 * answer's status or the error, and how long it took), and "Send again" (the same id and body, at once). */

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { withBusy } from "./forms.js";

const STATE_WORDS = { pending: "Waiting", delivered: "Delivered", failed: "Failed" };

/* Opens (and loads) or closes the deliveries of endpoint `id` in `panel`. */
export async function toggleDeliveries(button, id, panel) {
  const opening = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(opening));
  panel.hidden = !opening;
  if (opening) await loadDeliveries(id, panel);
}

async function loadDeliveries(id, panel) {
  const list = el("ol", { class: "delivery-list" });
  const refresh = el("button", { type: "button", class: "small" }, "Refresh");
  const alert = el("p", { class: "form-error", role: "alert" });
  const count = el("p", { class: "hint" }, "Loading…");
  panel.replaceChildren(el("h4", {}, "Recent deliveries"), count, alert, list, refresh);
  refresh.addEventListener("click", () => withBusy(refresh, () => loadDeliveries(id, panel)));
  list.addEventListener("click", (event) => {
    const button = event.target.closest(".delivery-resend");
    if (button) withBusy(button, () => resend(id, button.closest(".delivery"), alert));
  });
  try {
    const { data } = await api("GET", `webhooks/${id}/deliveries`);
    list.replaceChildren(...data.results.map(deliveryItem));
    count.textContent = countWords(data);
  } catch (error) {
    count.textContent = "";
    alert.textContent = error.message;
  }
}

function countWords(page) {
  if (!page.count) return "Nothing sent yet: messages appear here once a job of yours changes.";
  if (page.next) return `The newest ${page.results.length} of ${page.count}.`;
  return page.count === 1 ? "1 message." : `${page.count} messages.`;
}

function deliveryItem(delivery) {
  const next = delivery.nextAttemptAt ? ` · next try ${when(delivery.nextAttemptAt)}` : "";
  const tries = `${delivery.attemptCount} attempt${delivery.attemptCount === 1 ? "" : "s"}`;
  return el("li", { class: "delivery", "data-id": delivery.id },
    el("p", { class: "delivery-head" },
      el("strong", {}, delivery.type),
      el("span", { class: `badge badge-${delivery.state}` }, STATE_WORDS[delivery.state] || delivery.state)),
    el("p", { class: "hint" }, `${when(delivery.createdAt)} · ${tries}${next}`),
    delivery.attempts.length ? el("ol", { class: "attempt-list" }, ...delivery.attempts.map(attemptItem)) : null,
    el("button", { type: "button", class: "small delivery-resend", "aria-label": `Send again: ${delivery.type} of ${when(delivery.createdAt)}` }, "Send again"));
}

function attemptItem(attempt) {
  const outcome = attempt.statusCode ? `HTTP ${attempt.statusCode}` : "No answer";
  const error = attempt.error ? `: ${attempt.error}` : "";
  const hand = attempt.byHand ? " · sent again by hand" : "";
  return el("li", { class: attempt.statusCode >= 200 && attempt.statusCode < 300 ? "attempt-ok" : "attempt-failed" },
    `#${attempt.number} · ${outcome}${error} · ${attempt.durationMs} ms · ${when(attempt.startedAt)}${hand}`);
}

async function resend(id, item, alert) {
  alert.textContent = "";
  try {
    const { data } = await api("POST", `webhooks/${id}/deliveries/${encodeURIComponent(item.dataset.id)}/resend`);
    const fresh = deliveryItem(data);
    fresh.append(el("p", { class: "hint", role: "status" }, "Sending again now."));
    item.replaceWith(fresh);
  } catch (error) {
    alert.textContent = error.message;
  }
}

export function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
