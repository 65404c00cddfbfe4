/* What the server told the page (data attributes of #creator), and the page's fixed words. */

export const root = document.getElementById("creator");

const data = root ? root.dataset : {};
const positive = (value, fallback) => (Number(value) > 0 ? Number(value) : fallback);

export const API = "/api/video-creation/";
export const POLL_MS = positive(data.pollMs, 3000);
// The server's default for "Live updates" (CREATOR_USE_SSE), until the person chooses in Settings.
export const LIVE_BY_DEFAULT = data.useSse === "true";
// EventSource hides the server's heartbeats, so a stream silent for two of them is asked about.
export const STALL_MS = 2 * positive(data.sseHeartbeatMs, 15000);
// Before any project exists there is no status object to carry `prices`.
export const SCRIPT_PRICE = data.scriptPrice ? Number(data.scriptPrice) : NaN;
export const CREDITS_PER_SECOND = data.creditsPerSecond ? Number(data.creditsPerSecond) : NaN;

export const STEPS = ["brief", "script", "review", "render", "watch"];
export const PANELS = ["brief", "job-panel", "review", "watch", "failure"];
export const RUNNING = ["GENERATING_SCRIPT", "RENDERING"];
export const BRIEF_FIELDS = ["title", "brief", "aspectRatio", "sceneCount", "secondsPerScene", "style"];
export const NUMBER_FIELDS = ["sceneCount", "secondsPerScene"];
export const ANNOUNCED_KEY = "videocreation.announced";
export const LIVE_UPDATES_KEY = "videocreation.liveUpdates";
export const LOG_PAGE = 500; // the most lines the log endpoint answers at once
// The buttons that start a job, and the job whose price each shows ("retry": the failed one).
export const PRICED_BUTTONS = {
  "write-script-button": "script",
  "rewrite-button": "script",
  "render-button": "render",
  "render-again-button": "render",
  "retry-button": "retry",
};
