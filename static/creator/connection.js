/* The note at the top of the workspace: no connection, or live updates given up for polling. */

import { POLL_MS } from "./config.js";
import { $ } from "./dom.js";
import { state } from "./state.js";
import { isRunning } from "./status.js";

export function setOffline(offline) {
  state.offline = offline;
  renderConnectionNote();
}

export function renderConnectionNote() {
  const note = $("#connection-note");
  const fellBack = state.fellBack && state.liveUpdates && isRunning(state.project);
  if (state.offline) note.textContent = "Connection lost — reconnecting…";
  else if (fellBack) note.textContent = `Live updates unavailable; checking every ${POLL_MS / 1000} s`;
  else note.textContent = "";
  note.hidden = !note.textContent;
}
