/* Everything the page knows, in one object (shared as `window.videocreation.state`, for debugging). */

export const state = {
  project: null, // the open project: its brief fields and its status object
  generation: 0, // grows whenever the open project, or the way its job is followed, changes: late answers are dropped
  editingBrief: false,
  etag: null,
  logOffset: 0, // the lines of GET …/log the page has taken, shown or skipped
  logFrom: { seq: 0, offset: 0 }, // the shown log starts after event `seq`, which is line `offset` of GET …/log
  logSeq: 0, // on the stream, the open project's events up to this seq are in the shown log
  logChain: Promise.resolve(), // log reads and streamed events, applied one at a time in the order they came
  pollToken: 0,
  pollTimer: null,
  liveUpdates: false, // the person's choice: follow jobs over Server-Sent Events rather than polling
  stream: null, // the one EventSource of every project (all-projects-stream.js), and what it has brought
  fellBack: false, // the stream failed: the open job and the list are polled instead
  offline: false, // the last request found no connection, or a failing server
  projects: [], // "Your projects", newest first
  nextPage: null,
  listReload: null, // a read of the list asked for by the stream (a project it did not know), on its way
  briefFor: null, // the project the brief form was last filled from
  reviewKey: null, // the script the review panel was last built from
  balanceReading: false, // GET credits is on its way
  balanceAgain: false, // the balance moved while it was: read it once more
};
