/* Following the open project's running job: over Server-Sent Events (live updates, the default), falling back
 * to asking for the status every POLL_MS the moment the stream fails; never both at once. Either way each new
 * status object goes through applyStatus, each log line through appendLog. */

import { api } from "./api.js";
import { API, LIVE_BY_DEFAULT, LIVE_UPDATES_KEY, POLL_MS, STALL_MS } from "./config.js";
import { loadBalance } from "./credits.js";
import { $, bringIntoView } from "./dom.js";
import { appendLog, clearLog, fetchLog, inOrder } from "./log.js";
import { announceIfDue, dropStaleMessages, sayCancelled, toast } from "./notifications.js";
import { loadProjects, updateListed } from "./projects-list.js";
import { render } from "./render.js";
import { state } from "./state.js";
import { isRunning, stamped, titleOf, wasCancelled } from "./status.js";

/* Follow the open project's running job, showing its log from `state.logFrom` on. */
export function follow(delay = POLL_MS) {
  stopFollowing();
  if (!isRunning(state.project)) return;
  if (state.liveUpdates && !state.fellBack && "EventSource" in window) return openStream();
  fetchLog();
  startPolling(delay);
}

export function stopFollowing() {
  stopPolling();
  closeStream();
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
  stopFollowing();
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
  if (Boolean(state.stream) !== on) switchTransport();
  else render();
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

// --- the stream -------------------------------------------------------------------------------

/* The job's events as they happen (GET …/events). The server replays the events after `logFrom.seq`, so the
 * log comes whole from the stream; EventSource resumes a dropped stream with Last-Event-ID by itself. */
function openStream() {
  const { project, generation } = state;
  let source;
  try {
    source = new EventSource(`${API}projects/${project.id}/events?lastEventId=${state.logFrom.seq}`);
  } catch (error) {
    return fallBack();
  }
  // `since`: the page already shows every change up to this seq, so replayed status events before it are old news.
  const stream = { source, since: project.version, lastSeq: project.version, opened: false, drops: 0, behind: 0 };
  state.stream = stream;
  const applyEvent = (event) => {
    const { seq, ...status } = event;
    if (seq > stream.since) applyStatus({ id: project.id, version: seq, ...status });
  };
  // One log event carries every line logged in a moment (older events: `line` alone).
  const appendEvent = (event) => {
    const lines = event.lines || [event.line];
    state.logOffset += lines.length;
    appendLog(lines);
  };
  // Each event in the order it came, after any log read still on its way.
  const take = (handle) => (message) => {
    stream.lastSeq = Math.max(stream.lastSeq, Number(message.lastEventId) || 0);
    stream.drops = 0;
    watchStream(stream);
    const event = JSON.parse(message.data);
    inOrder(() => generation === state.generation && handle(event));
  };
  source.addEventListener("status", take(applyEvent));
  source.addEventListener("progress", take(applyEvent));
  source.addEventListener("log", take(appendEvent));
  source.addEventListener("open", () => {
    stream.opened = true;
  });
  source.addEventListener("error", () => streamFailed(stream));
  watchStream(stream);
}

function closeStream() {
  if (!state.stream) return;
  state.stream.source.close();
  clearTimeout(state.stream.timer);
  state.stream = null;
}

/* EventSource retries a stream that dropped (readyState CONNECTING) by itself, and the server replays what
 * was missed. A stream the browser gave up on (CLOSED: an HTTP error, not an event stream), one that could
 * not be opened or reopened, or one that keeps dropping without bringing anything, does not work here. */
function streamFailed(stream) {
  if (state.stream !== stream) return;
  stream.drops += 1;
  if (stream.source.readyState === EventSource.CLOSED || !stream.opened || stream.drops >= 3) return fallBack();
  stream.opened = false; // EventSource tries again in the server's `retry` time; a failure then falls back
}

function fallBack() {
  state.fellBack = true;
  switchTransport();
}

/* A proxy that holds a stream back shows no error: the stream just goes quiet. After STALL_MS of silence
 * ask for the status once; a version the stream still has not brought one more STALL_MS later means stuck. */
function watchStream(stream, delay = STALL_MS) {
  clearTimeout(stream.timer);
  stream.timer = setTimeout(() => checkStream(stream), delay);
}

async function checkStream(stream) {
  if (state.stream !== stream) return;
  if (stream.behind > stream.lastSeq) return fallBack();
  try {
    const { data } = await api("GET", `projects/${state.project.id}/status`);
    if (state.stream === stream) stream.behind = data.version;
  } catch (error) {
    // No answer proves nothing about the stream; EventSource reports its own failures.
  }
  if (state.stream === stream) watchStream(stream);
}
