/* Credits: the balance in the header, and the price on each button that starts a job. */

import { api } from "./api.js";
import { CREDITS_PER_SECOND, PRICED_BUTTONS, SCRIPT_PRICE } from "./config.js";
import { $ } from "./dom.js";
import { readScript, scriptChanged } from "./forms.js";
import { state } from "./state.js";

const creditsText = (count) => `${count} credit${count === 1 ? "" : "s"}`;

export function showBalance(balance) {
  const badge = $("#credits-balance");
  if (!badge) return;
  badge.textContent = creditsText(balance);
  badge.hidden = false;
}

/* The balance moves when a job starts (a charge) and when one fails or is cancelled (a refund), so it is read
 * then, and on load: one read at a time, and one more if it moved meanwhile. */
export async function loadBalance() {
  if (state.balanceReading) {
    state.balanceAgain = true;
    return;
  }
  state.balanceReading = true;
  try {
    showBalance((await api("GET", "credits?pageSize=1")).data.balance);
  } catch (error) {
    // The header keeps the last balance it showed; the next change reads it again.
  } finally {
    state.balanceReading = false;
    if (state.balanceAgain) {
      state.balanceAgain = false;
      loadBalance();
    }
  }
}

/* The price on each button that starts a job: what starting it costs now. */
export function renderPrices(project) {
  for (const [id, job] of Object.entries(PRICED_BUTTONS)) {
    const button = document.getElementById(id);
    if (!button.dataset.label) button.dataset.label = button.textContent;
    const price = priceOf(project, job === "retry" ? (project && project.currentStep) || "script" : job);
    button.textContent = Number.isFinite(price) ? `${button.dataset.label} · ${creditsText(price)}` : button.dataset.label;
  }
}

function priceOf(project, step) {
  if (!project || !project.prices) return step === "script" ? SCRIPT_PRICE : NaN;
  // An edited script is saved before it renders, and charged for its own length: the server's sum, done here.
  if (step === "render" && !$("#review").hidden && project.scriptData && scriptChanged()) {
    const seconds = readScript().scenes.reduce((total, scene) => total + scene.seconds, 0);
    return Math.ceil(seconds * CREDITS_PER_SECOND);
  }
  return project.prices[step];
}

/* A start the balance cannot pay for (402): say what the job costs and what there is. */
export function refusedStart(step, error) {
  if (error.code !== "insufficient_credits") return error;
  const { balance, price } = error.body;
  showBalance(balance);
  const job = step === "render" ? "Rendering this video" : "Writing this script";
  return Object.assign(error, { message: `${job} costs ${creditsText(price)}; you have ${balance}.`, fields: {} });
}
