/* One Server-Sent Events connection for every project of the person (GET events): "Your projects" moves with
 * it, a job that ends anywhere is told about, and the open project's job, bar and log, comes over it too.
 *
 * Each event carries `projectId` and `seq`; its SSE id is a token of the cursor in every project, which
 * EventSource sends back by itself when it reconnects, so a dropped stream resumes each project exactly.
 * A stream opened without a token starts with the current status of each unfinished project (a snapshot, not
 * the events that led there), then `ready`. The open project's log needs its events: when the stream stands
 * past the last one the shown log has (`state.logSeq`), the page reconnects with that project's cursor moved
 * back, and the server sends its events again from there. */

import { api } from "./api.js";
import { API, STALL_MS } from "./config.js";
import { decodeToken, encodeToken } from "./cursor-token.js";
import { appendLog, inOrder } from "./log.js";
import { applyStatus, fellBackToPolling } from "./progress-stream.js";
import { heardOf } from "./projects-list.js";
import { state } from "./state.js";
import { isRunning } from "./status.js";

const KINDS = ["status", "progress", "log"];

export function openStream(token = null) {
  closeStream();
  let source;
  try {
    source = new EventSource(`${API}events${token ? `?since=${encodeURIComponent(token)}` : ""}`);
  } catch (error) {
    return fellBackToPolling();
  }
  // `token`: the cursors of the events applied; `lastId`, of the events received (the browser's Last-Event-ID).
  const stream = { source, token, lastId: token, snapshot: !token, opened: false, drops: 0, seen: new Map(), behind: null };
  state.stream = stream;
  const take = (kind) => (message) => {
    if (state.stream !== stream) return;
    const id = message.lastEventId;
    stream.lastId = id || stream.lastId;
    stream.drops = 0;
    watchStream(stream);
    const event = JSON.parse(message.data);
    if (event.projectId) stream.seen.set(event.projectId, Math.max(event.seq, stream.seen.get(event.projectId) || 0));
    inOrder(() => {
      if (state.stream !== stream) return;
      if (id) stream.token = id;
      if (kind !== "ready") return receive(kind, event, stream.snapshot);
      stream.snapshot = false;
      replayIfBehind();
    });
  };
  for (const kind of [...KINDS, "ready"]) source.addEventListener(kind, take(kind));
  source.addEventListener("open", () => {
    stream.opened = true;
    // Without a cursor the server answers with a snapshot first; EventSource resends the last id it got.
    stream.snapshot = !stream.lastId;
  });
  source.addEventListener("error", () => streamFailed(stream));
  watchStream(stream);
}

export function closeStream() {
  if (!state.stream) return;
  state.stream.source.close();
  clearTimeout(state.stream.timer);
  state.stream = null;
}

/* If the stream stands past what the open job's log shows, have its events sent again from there. */
export function replayIfBehind() {
  const { stream, project } = state;
  if (!stream || !stream.token || stream.snapshot || !isRunning(project)) return;
  const cursors = decodeToken(stream.token);
  if (!cursors || !(cursors.get(project.id) > state.logSeq)) return;
  cursors.set(project.id, state.logSeq);
  openStream(encodeToken(cursors));
}

/* An event of any project: to the open project's view if it is about that one, else to the list. */
function receive(kind, event, snapshot) {
  const { projectId: id, seq, ...payload } = event;
  const open = Boolean(state.project) && state.project.id === id;
  if (kind === "log") {
    if (!open || seq <= state.logSeq) return;
    state.logSeq = seq;
    const lines = payload.lines || [payload.line]; // one log event carries every line logged in a moment
    state.logOffset += lines.length;
    return appendLog(lines);
  }
  const status = { id, version: seq, ...payload };
  if (!open) return heardOf(status, kind);
  if (!snapshot && seq > state.logSeq) state.logSeq = seq;
  applyStatus(status);
}

/* EventSource retries a stream that dropped (readyState CONNECTING) by itself, with the last id it got. A stream
 * the browser gave up on (CLOSED: an HTTP error, not an event stream), one that could not be opened or reopened,
 * or one that keeps dropping without bringing anything, does not work here: the page polls instead. */
function streamFailed(stream) {
  if (state.stream !== stream) return;
  stream.drops += 1;
  if (stream.source.readyState === EventSource.CLOSED || !stream.opened || stream.drops >= 3) return fellBackToPolling();
  stream.opened = false;
}

/* A proxy that holds a stream back shows no error: the stream just goes quiet. After STALL_MS of silence while
 * the open project's job runs, ask for its status once; a version the stream still has not brought one more
 * STALL_MS later means stuck. */
function watchStream(stream) {
  clearTimeout(stream.timer);
  stream.timer = setTimeout(() => checkStream(stream), STALL_MS);
}

async function checkStream(stream) {
  if (state.stream !== stream) return;
  const project = state.project;
  if (!isRunning(project)) {
    stream.behind = null;
    return watchStream(stream);
  }
  const brought = Math.max(project.version, stream.seen.get(project.id) || 0);
  if (stream.behind && stream.behind.id === project.id && stream.behind.version > brought) return fellBackToPolling();
  try {
    const { data } = await api("GET", `projects/${project.id}/status`);
    if (state.stream === stream) stream.behind = { id: data.id, version: data.version };
  } catch (error) {
    // No answer proves nothing about the stream; EventSource reports its own failures.
  }
  if (state.stream === stream) watchStream(stream);
}
