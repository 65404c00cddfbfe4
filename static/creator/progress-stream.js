/* Following the open project's running job: over the one stream of every project (live updates, the default;
 * all-projects-stream.js), falling back to asking for the status every POLL_MS the moment the stream fails;
 * never both at once. Either way each new status object goes through applyStatus, each log line through
 * appendLog. */

import { closeStream, openStream, replayIfBehind } from "./all-projects-stream.js";
import { api } from "./api.js";
import { LIVE_BY_DEFAULT, LIVE_UPDATES_KEY, POLL_MS } from "./config.js";
import { loadBalance } from "./credits.js";
import { $, bringIntoView } from "./dom.js";
import { clearLog, fetchLog, inOrder } from "./log.js";
import { announceIfDue, dropStaleMessages, sayCancelled, toast } from "./notifications.js";
import { loadProjects, updateListed } from "./projects-list.js";
import { render } from "./render.js";
import { state } from "./state.js";
import { isRunning, stamped, titleOf, wasCancelled } from "./status.js";

/* Whether jobs are followed over the stream now: the person's choice, unless it failed here. */
export const liveWanted = () => state.liveUpdates && !state.fellBack && "EventSource" in window;

/* Follow the open project's running job, showing its log from `state.logFrom` on. */
export function follow(delay = POLL_MS) {
  stopFollowing();
  if (!isRunning(state.project)) return;
  if (liveWanted()) {
    state.logSeq = state.logFrom.seq;
    if (!state.stream) openStream();
    inOrder(replayIfBehind); // after the events already on their way
    return;
  }
  fetchLog();
  startPolling(delay);
}

/* The stream stays: it carries every project, not only the open one. */
export function stopFollowing() {
  stopPolling();
}

/* A newer status of the open project, from any answer: into the page's state and the list. */
export function mergeStatus(status) {
  state.project = { ...state.project, ...stamped(status) };
  state.etag = null;
  dropStaleMessages(status);
  updateListed(status);
}

/* A new status of the open project, from either transport; when its job has just ended, tell the person. */
export function applyStatus(status, etag = null) {
  const before = state.project;
  if (!before || before.id !== status.id) return;
  // A poll sent before a cancel can answer after it: an older version never overwrites a newer one.
  if (status.version < before.version) return;
  mergeStatus(status);
  state.etag = etag;
  if (!isRunning(before) || isRunning(status)) return render();
  stopFollowing();
  state.editingBrief = false;
  render();
  if (wasCancelled(before, status)) bringIntoView(sayCancelled(state.project));
  else announceIfDue(state.project);
  if (state.project.status === "COMPLETED") bringIntoView($("#watch .player"));
  loadProjects();
  loadBalance(); // a failed or cancelled job was refunded
}

/* Follow the open job the other way. The new transport draws the log again from its start, so a line
 * the old one showed (or was about to) never shows twice. */
function switchTransport() {
  stopPolling();
  render();
  if (!isRunning(state.project)) return;
  state.generation += 1; // what the old transport still has on its way is dropped
  const generation = state.generation;
  inOrder(() => {
    if (generation !== state.generation) return;
    clearLog();
    state.logOffset = state.logFrom.offset;
    follow(0);
  });
}

/* The stream does not work here: the open job and the list are polled instead, until the next job starts. */
export function fellBackToPolling() {
  state.fellBack = true;
  closeStream();
  switchTransport();
  loadProjects();
}

/* The person's last choice in this browser, else the server's default (CREATOR_USE_SSE). */
export function readLiveUpdates() {
  let stored = null;
  try {
    stored = localStorage.getItem(LIVE_UPDATES_KEY);
  } catch (error) {
    // Storage may be refused; then the server's default holds.
  }
  state.liveUpdates = stored ? stored === "on" : LIVE_BY_DEFAULT;
  $("#live-updates").checked = state.liveUpdates;
}

export function setLiveUpdates(on) {
  Object.assign(state, { liveUpdates: on, fellBack: false });
  try {
    localStorage.setItem(LIVE_UPDATES_KEY, on ? "on" : "off");
  } catch (error) {
    // Storage may be refused (private windows); the choice then lasts until the page reloads.
  }
  if (liveWanted()) {
    if (!state.stream) openStream();
  } else {
    closeStream();
    loadProjects(); // the list is polled from now on
  }
  switchTransport();
}

// --- polling ----------------------------------------------------------------------------------

export function startPolling(delay = POLL_MS) {
  stopPolling();
  const token = state.pollToken;
  const tick = async () => {
    await pollStatus();
    if (token === state.pollToken && isRunning(state.project)) state.pollTimer = setTimeout(tick, POLL_MS);
  };
  state.pollTimer = setTimeout(tick, delay);
}

function stopPolling() {
  state.pollToken += 1;
  clearTimeout(state.pollTimer);
}

export async function pollStatus() {
  const { project, generation } = state;
  if (!project) return;
  try {
    const headers = state.etag ? { "If-None-Match": state.etag } : {};
    const response = await api("GET", `projects/${project.id}/status`, undefined, headers);
    if (generation !== state.generation || response.status === 304) return;
    await fetchLog();
    if (generation === state.generation) applyStatus(response.data, response.etag);
  } catch (error) {
    if (error.status < 400 || error.status >= 500 || generation !== state.generation) return; // keep trying
    stopPolling();
    toast(error.message, titleOf(project), "error");
  }
}
