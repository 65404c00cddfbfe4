/* The open job's log: lines from GET …/log or from the stream, each shown once, in order. */

import { api } from "./api.js";
import { LOG_PAGE } from "./config.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";

export function appendLog(lines) {
  if (!lines.length) return;
  const log = $("#job-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 32; // follow unless scrolled up
  log.append(...lines.map((line) => el("div", { class: "log-line" }, line)));
  if (atBottom) log.scrollTop = log.scrollHeight;
}

export function clearLog() {
  $("#job-log").replaceChildren();
}

/* The log shown for a new job starts after its first event, at the line the log endpoint has reached by then. */
export function markLogStart(seq) {
  const from = { seq, offset: state.logOffset };
  state.logFrom = from;
  inOrder(() => {
    if (state.logFrom === from) from.offset = state.logOffset; // after a log read that was still on its way
  });
}

/* Log requests run one at a time, each from the offset the last one left: no line twice. */
export function fetchLog(show = true) {
  const generation = state.generation;
  return inOrder(() => readLog(show, generation));
}

/* Log reads and streamed events are applied one at a time, in the order they came. */
export function inOrder(work) {
  state.logChain = state.logChain.then(work).catch((error) => {
    if (!error || error.status === undefined) console.error(error); // a failed request is tried again; a bug is not
  });
  return state.logChain;
}

async function readLog(show, generation) {
  for (;;) {
    if (!state.project || generation !== state.generation) return;
    const { data } = await api("GET", `projects/${state.project.id}/log?offset=${state.logOffset}`);
    if (generation !== state.generation) return;
    state.logOffset = data.nextOffset;
    if (show) appendLog(data.lines);
    if (data.lines.length < LOG_PAGE) return;
  }
}
