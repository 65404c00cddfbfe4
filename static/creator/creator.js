/* The creator page: brief → script → review → render → watch (the API contract: shared/API.md).
 * Plain JavaScript in one closure; only `window.videocreation` is shared, for debugging. */
(function () {
  "use strict";

  const root = document.getElementById("creator");
  if (!root) return;

  const API = "/api/video-creation/";
  const POLL_MS = Number(root.dataset.pollMs) > 0 ? Number(root.dataset.pollMs) : 3000;
  const STEPS = ["brief", "script", "review", "render", "watch"];
  const PANELS = ["brief", "job-panel", "review", "watch", "failure"];
  const RUNNING = ["GENERATING_SCRIPT", "RENDERING"];
  const BRIEF_FIELDS = ["title", "brief", "aspectRatio", "sceneCount", "secondsPerScene", "style"];
  const NUMBER_FIELDS = ["sceneCount", "secondsPerScene"];
  const ANNOUNCED_KEY = "videocreation.announced";
  const LIVE_UPDATES_KEY = "videocreation.liveUpdates";
  const LOG_PAGE = 500; // the most lines the log endpoint answers at once
  // EventSource hides the server's heartbeats, so a stream silent for two of them is asked about (checkStream).
  const STALL_MS = 2 * (Number(root.dataset.sseHeartbeatMs) > 0 ? Number(root.dataset.sseHeartbeatMs) : 15000);
  // Before any project exists there is no status object to carry `prices`.
  const SCRIPT_PRICE = root.dataset.scriptPrice ? Number(root.dataset.scriptPrice) : NaN;
  const CREDITS_PER_SECOND = root.dataset.creditsPerSecond ? Number(root.dataset.creditsPerSecond) : NaN;
  // The buttons that start a job, and the job whose price each shows ("retry": the failed one).
  const PRICED_BUTTONS = {
    "write-script-button": "script",
    "rewrite-button": "script",
    "render-button": "render",
    "render-again-button": "render",
    "retry-button": "retry",
  };

  const state = {
    project: null, // the open project: its brief fields and its status object
    generation: 0, // grows whenever the open project, or the way its job is followed, changes: late answers are dropped
    editingBrief: false,
    etag: null,
    logOffset: 0, // the lines of GET …/log the page has taken, shown or skipped
    logFrom: { seq: 0, offset: 0 }, // the shown log starts after event `seq`, which is line `offset` of GET …/log
    logChain: Promise.resolve(), // log reads and streamed events, applied one at a time in the order they came
    pollToken: 0,
    pollTimer: null,
    liveUpdates: false, // the person's choice: follow jobs over Server-Sent Events rather than polling
    stream: null, // the EventSource following the open job, and what it has brought
    fellBack: false, // the stream failed for the open job, which is followed by polling instead
    offline: false, // the last request found no connection, or a failing server
    projects: [], // "Your projects", newest first
    nextPage: null,
    briefFor: null, // the project the brief form was last filled from
    reviewKey: null, // the script the review panel was last built from
    balanceReading: false, // GET credits is on its way
    balanceAgain: false, // the balance moved while it was: read it once more
  };
  window.videocreation = { state, POLL_MS };

  const $ = (selector, scope = document) => scope.querySelector(selector);
  const $$ = (selector, scope = document) => Array.from(scope.querySelectorAll(selector));

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  // --- the API ------------------------------------------------------------------------

  function apiError(status, body) {
    const { detail = "Something went wrong; please try again.", code = "error", fields = {} } = body || {};
    return Object.assign(new Error(detail), { status, code, fields, body: body || {} });
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  /* One request: JSON both ways, CSRF on unsafe methods, failures thrown as {message, status, code, fields}.
   * Answers {status, data, etag}; a 304 answers with data null. */
  async function api(method, path, body, headers = {}) {
    const init = { method, credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json", ...headers } };
    if (method !== "GET") {
      Object.assign(init.headers, { "X-CSRFToken": csrfToken(), "Content-Type": "application/json" });
      if (body !== undefined) init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      setOffline(true);
      throw apiError(0, { detail: "Connection lost — reconnecting…", code: "network" });
    }
    setOffline(response.status >= 500);
    const data = response.status === 304 ? null : await response.json().catch(() => null);
    if (!response.ok && response.status !== 304) {
      if (data && data.code === "not_authenticated") window.location.assign("/accounts/login/?next=/");
      throw apiError(response.status, data);
    }
    return { status: response.status, data, etag: response.headers.get("ETag") };
  }

  // --- what a status means -------------------------------------------------------------

  const isRunning = (project) => Boolean(project) && RUNNING.includes(project.status);
  const jobName = (project) => (project.currentStep === "render" ? "Rendering" : "Writing the script");

  function stepOf(project) {
    if (!project || state.editingBrief) return "brief";
    if (project.status === "GENERATING_SCRIPT") return "script";
    if (project.status === "RENDERING") return "render";
    if (project.status === "COMPLETED") return "watch";
    if (project.status === "FAILED") return project.currentStep === "render" ? "render" : "script";
    return project.scriptData ? "review" : "brief";
  }

  function panelOf(project, step) {
    if (step === "script" || step === "render") return project.status === "FAILED" ? "failure" : "job-panel";
    return step;
  }

  function statusWords(project) {
    if (project.status === "DRAFT") return project.scriptData ? "Script ready" : "Draft";
    const words = { GENERATING_SCRIPT: "Writing the script", RENDERING: "Rendering", COMPLETED: "Video ready" };
    return words[project.status] || "Failed";
  }

  /* The server's estimate of the seconds left (null: no basis yet; a missing field counts as null),
   * with when it came, so the page can count it down until the next status object brings a new one. */
  function stamped(status) {
    const estimate = status.estimatedSecondsRemaining;
    return { ...status, estimatedSecondsRemaining: Number.isFinite(estimate) ? estimate : null, estimatedAt: Date.now() };
  }

  function secondsLeft(project) {
    if (!isRunning(project) || project.estimatedSecondsRemaining == null) return null;
    const gone = Math.floor((Date.now() - project.estimatedAt) / 1000);
    return Math.max(0, project.estimatedSecondsRemaining - gone);
  }

  function remainingWords(seconds) {
    if (seconds < 5) return "a few seconds left";
    if (seconds < 90) return `about ${Math.max(5, Math.round(seconds / 5) * 5)} s left`;
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `about ${minutes} min left`;
    const [hours, rest] = [Math.floor(minutes / 60), minutes % 60];
    return rest ? `about ${hours} h ${rest} min left` : `about ${hours} h left`;
  }

  function titleOf(project) {
    const listed = state.projects.find((item) => item.id === project.id);
    return project.title || (listed ? listed.title : "");
  }

  // --- drawing the open project ----------------------------------------------------------

  function render() {
    const project = state.project;
    const step = stepOf(project);
    const panel = panelOf(project, step);
    renderTimeline(step);
    for (const id of PANELS) document.getElementById(id).hidden = id !== panel;
    for (const video of $$(".panel[hidden] video")) video.pause();
    const draw = { brief: renderBrief, "job-panel": renderJob, review: renderReview, watch: renderWatch, failure: renderFailure };
    draw[panel](project);
    renderPrices(project);
    $("#workspace-title").textContent = project ? project.title : "New video";
    document.title = isRunning(project) ? `(${project.progress}%) ${jobName(project)} — videocreation` : "videocreation";
    renderConnectionNote();
  }

  function setOffline(offline) {
    state.offline = offline;
    renderConnectionNote();
  }

  function renderConnectionNote() {
    const note = $("#connection-note");
    const fellBack = state.fellBack && state.liveUpdates && isRunning(state.project);
    if (state.offline) note.textContent = "Connection lost — reconnecting…";
    else if (fellBack) note.textContent = `Live updates unavailable; checking every ${POLL_MS / 1000} s`;
    else note.textContent = "";
    note.hidden = !note.textContent;
  }

  function renderTimeline(step) {
    const current = STEPS.indexOf(step);
    const status = state.project && state.project.status;
    $$(".timeline li").forEach((item, index) => {
      const done = index < current || (status === "COMPLETED" && index === current);
      const failed = status === "FAILED" && !state.editingBrief && index === current;
      item.classList.toggle("done", done);
      item.classList.toggle("failed", failed);
      if (index === current) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
      $(".step-state", item).textContent = failed ? " (failed)" : done ? " (done)" : "";
    });
  }

  function renderBrief(project) {
    $("#back-to-review-button").hidden = !(project && project.status === "DRAFT" && project.scriptData);
    const key = project ? project.id : "new";
    if (state.briefFor === key) return; // keep what the person is typing
    state.briefFor = key;
    const form = $("#brief-form");
    form.reset();
    clearErrors(form);
    if (project) for (const name of BRIEF_FIELDS) form.elements[name].value = project[name];
    updateBriefCount();
  }

  function updateBriefCount() {
    $("#brief-count").textContent = `${$("#brief-text").value.length} / 2000`;
  }

  function renderJob(project) {
    const percent = Math.max(0, Math.min(100, Math.round(project.progress || 0)));
    const bar = $("#job-progress");
    $("#job-title").textContent = project.status === "RENDERING" ? "Rendering the video" : "Writing the script";
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", `${percent}% — ${project.progressMessage || "Working"}`);
    $("#job-fill").style.width = `${percent}%`;
    $("#job-percent").textContent = `${percent}%`;
    $("#job-message").textContent = project.progressMessage || "Working…";
    const step = $("#job-step");
    step.hidden = !project.totalSteps;
    step.textContent = `Step ${Math.min(project.completedSteps + 1, project.totalSteps)} of ${project.totalSteps}`;
    renderElapsed();
    renderRemaining();
    renderPrevious($("#job-previous"), project.status === "RENDERING" ? project.previousVideoUrl : null);
  }

  /* The last finished video, kept while a new render runs and after one is cancelled or fails. */
  function renderPrevious(figure, source) {
    const video = $("video", figure);
    figure.hidden = !source;
    if (!source) {
      video.pause();
      return;
    }
    if (video.getAttribute("src") !== source) video.setAttribute("src", source); // the URL names the file
    $(".previous-download", figure).setAttribute("href", source);
  }

  function renderElapsed() {
    const project = state.project;
    if (!isRunning(project) || !project.startedAt) return;
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(project.startedAt)) / 1000));
    const [hours, minutes, rest] = [Math.floor(seconds / 3600), Math.floor((seconds % 3600) / 60), seconds % 60];
    const pad = (value) => String(value).padStart(2, "0");
    $("#job-elapsed").textContent = hours ? `${hours}:${pad(minutes)}:${pad(rest)}` : `${minutes}:${pad(rest)}`;
  }

  /* Counted down each second with Elapsed; like it, outside any live region, so nothing is announced per tick. */
  function renderRemaining() {
    const seconds = secondsLeft(state.project);
    const text = seconds === null ? "" : remainingWords(seconds);
    const remaining = $("#job-remaining");
    if (remaining.textContent !== text) remaining.textContent = text;
    remaining.hidden = !text;
  }

  function appendLog(lines) {
    if (!lines.length) return;
    const log = $("#job-log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 32; // follow unless scrolled up
    log.append(...lines.map((line) => el("div", { class: "log-line" }, line)));
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function renderReview(project) {
    renderPrevious($("#review-previous"), project.previousVideoUrl);
    const key = project.id + JSON.stringify(project.scriptData);
    if (state.reviewKey === key) return; // keep unsaved edits
    state.reviewKey = key;
    clearErrors($("#script-form"));
    $("#script-saved").textContent = "";
    $("#script-title").value = project.scriptData.title || "";
    const scenes = $("#scenes");
    scenes.dataset.aspect = project.aspectRatio;
    scenes.style.setProperty("--aspect", project.aspectRatio.replace(":", " / "));
    scenes.replaceChildren(...project.scriptData.scenes.map((scene) => sceneItem(project, scene)));
  }

  function sceneItem(project, scene) {
    const version = encodeURIComponent(project.completedAt || project.version); // a rewrite draws new previews
    const src = `${API}projects/${project.id}/scenes/${scene.index}/preview?v=${version}`;
    const image = el("img", { loading: "lazy", src, alt: scene.visual });
    const figure = el("figure", { class: "scene-preview" }, image);
    image.addEventListener("error", () => figure.classList.add("missing"), { once: true });
    const field = (label, control) => {
      const error = el("p", { class: "field-error", "data-field": control.name, id: `scene-${scene.index}-${control.name}-error` });
      control.setAttribute("aria-describedby", error.id);
      return el("div", { class: "field" }, el("label", {}, el("span", { class: "label" }, label), control), error);
    };
    const text = (name, rows, value) => el("textarea", { name, rows, maxlength: "1000", required: "" }, value);
    const seconds = el("input", { name: "seconds", type: "number", min: "1", max: "20", step: "any", value: String(scene.seconds) });
    const fields = el("div", { class: "scene-fields" }, el("h3", {}, `Scene ${scene.index + 1}`),
      field("Narration", text("narration", "2", scene.narration)),
      field("Visual", text("visual", "3", scene.visual)),
      field("Seconds", seconds));
    return el("li", { class: "scene" }, figure, fields);
  }

  function renderWatch(project) {
    const source = project.videoUrl; // versioned by its file: a new render, a new address
    const video = $("#watch video");
    if (video.getAttribute("src") !== source) video.setAttribute("src", source);
    $("#download-link").setAttribute("href", source);
  }

  function renderFailure(project) {
    $("#failure-heading").textContent = `${jobName(project)} failed`;
    $("#failure-message").textContent = (project.error && project.error.message) || "The job stopped with an error.";
    renderPrevious($("#failure-previous"), project.previousVideoUrl);
  }

  // --- forms and their errors ------------------------------------------------------------

  function clearErrors(scope) {
    for (const alert of $$("[role=alert]", scope)) alert.textContent = "";
    for (const slot of $$(".field-error", scope)) slot.textContent = "";
    for (const input of $$("[aria-invalid]", scope)) input.removeAttribute("aria-invalid");
  }

  function showErrors(scope, error) {
    $("[role=alert]", scope).textContent = error.message;
    for (const [field, messages] of Object.entries(error.fields)) {
      const slot = $(`.field-error[data-field="${CSS.escape(field)}"]`, scope);
      const unplaced = field === "scriptData" ? placeScriptErrors(messages) : messages;
      if (slot) slot.textContent = unplaced.join(" ");
      const input = scope.elements && scope.elements[field];
      if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
    }
    const first = $("[aria-invalid=true]", scope);
    if (first) first.focus();
  }

  /* A script error names its place in its text ("scenes: 1: narration: …"): show it beside that input.
   * Answers the messages that found no place. */
  function placeScriptErrors(messages) {
    return messages.filter((message) => {
      const [, index, name, text] = message.match(/^(?:scenes: (\d+): )?(\w+): (.+)$/) || [];
      const scope = index === undefined ? $("#script-form") : $$("#scenes .scene")[Number(index)];
      const slot = name && scope && $(`.field-error[data-field="${name}"]`, scope);
      if (!slot) return true;
      slot.textContent = text;
      $(`[name="${name}"]`, scope).setAttribute("aria-invalid", "true");
      return false;
    });
  }

  function readBrief() {
    const value = (name) => $("#brief-form").elements[name].value.trim();
    const typed = (name) => (NUMBER_FIELDS.includes(name) && value(name) !== "" ? Number(value(name)) : value(name));
    return Object.fromEntries(BRIEF_FIELDS.map((name) => [name, typed(name)]));
  }

  function scriptShape(script) {
    const scenes = script.scenes.map(({ index, narration, visual, seconds }) => ({ index, narration, visual, seconds }));
    return { title: script.title, scenes };
  }

  function readScript() {
    const scenes = $$("#scenes .scene").map((item, index) => ({
      index,
      narration: $("[name=narration]", item).value.trim(),
      visual: $("[name=visual]", item).value.trim(),
      seconds: Number($("[name=seconds]", item).value),
    }));
    return scriptShape({ title: $("#script-title").value.trim(), scenes });
  }

  const scriptChanged = () => JSON.stringify(readScript()) !== JSON.stringify(scriptShape(state.project.scriptData));

  /* The button stays disabled while its work runs, so a double click sends one request. */
  async function withBusy(button, work) {
    if (button.disabled) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      await work();
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // --- what people do --------------------------------------------------------------------

  async function submitBrief(event) {
    event.preventDefault();
    askNotificationPermission();
    const form = $("#brief-form");
    await withBusy($("#write-script-button"), async () => {
      clearErrors(form);
      try {
        const current = state.project;
        const saved = current
          ? await api("PATCH", `projects/${current.id}`, readBrief())
          : await api("POST", "projects", readBrief());
        state.project = saved.data;
        state.briefFor = saved.data.id;
        loadProjects();
        startJob((await api("POST", `projects/${saved.data.id}/script`)).data);
      } catch (error) {
        showErrors(form, refusedStart("script", error));
      }
    });
  }

  async function saveScript() {
    const form = $("#script-form");
    clearErrors(form);
    $("#script-saved").textContent = "";
    try {
      const { data } = await api("PATCH", `projects/${state.project.id}/script`, { scriptData: readScript() });
      mergeStatus(data);
      state.reviewKey = data.id + JSON.stringify(data.scriptData);
      renderPrices(state.project);
      $("#script-saved").textContent = "Script saved.";
      return true;
    } catch (error) {
      showErrors(form, error);
      if (error.fields.scriptData && !$('.field-error[data-field="scriptData"]', form).textContent) {
        $("[role=alert]", form).textContent = "Some scenes need a change; see the notes beside them.";
      }
      return false;
    }
  }

  async function renderVideo() {
    askNotificationPermission();
    if (scriptChanged() && !(await saveScript())) return;
    await startStep("render", $("#review"));
  }

  /* Start the open project's script or render job; errors go to the panel's alert. */
  async function startStep(step, panel) {
    askNotificationPermission();
    const project = state.project;
    try {
      startJob((await api("POST", `projects/${project.id}/${step}`)).data);
    } catch (error) {
      if (error.code !== "conflict") return showErrors(panel, refusedStart(step, error));
      toast(error.message, titleOf(project), "info"); // another tab moved it on: show where it is now
      openProject(project.id);
    }
  }

  async function cancelJob() {
    try {
      applyStatus((await api("POST", `projects/${state.project.id}/cancel`)).data);
    } catch (error) {
      if (error.code === "conflict") return pollStatus(); // it ended meanwhile
      showErrors($("#job-panel"), error);
    }
  }

  function startJob(status) {
    Object.assign(state, { editingBrief: false, fellBack: false });
    clearErrors($("#job-panel"));
    $("#job-log").replaceChildren();
    mergeStatus(status);
    render();
    markLogStart(status.version);
    follow();
    loadProjects();
    loadBalance(); // the job was charged as it started
  }

  function mergeStatus(status) {
    state.project = { ...state.project, ...stamped(status) };
    state.etag = null;
    const index = state.projects.findIndex((item) => item.id === status.id);
    if (index < 0) return;
    state.projects[index] = { ...state.projects[index], ...stamped(status) };
    renderProjects();
  }

  function editBrief() {
    state.editingBrief = true;
    render();
    $("#brief-title").focus();
  }

  function showReview() {
    state.editingBrief = false;
    render();
  }

  function leaveOpenProject() {
    stopFollowing();
    state.generation += 1;
    Object.assign(state, { editingBrief: false, etag: null, logOffset: 0, logFrom: { seq: 0, offset: 0 }, fellBack: false });
    Object.assign(state, { briefFor: null, reviewKey: null });
    $("#job-log").replaceChildren();
  }

  function startNew() {
    leaveOpenProject();
    state.project = null;
    render();
    renderProjects();
  }

  async function openProject(id) {
    let project;
    try {
      project = (await api("GET", `projects/${id}`)).data;
    } catch (error) {
      return toast(error.message, "", "error");
    }
    leaveOpenProject();
    state.project = stamped(project);
    render();
    renderProjects();
    if (isRunning(project)) return follow(); // with its whole log
    fetchLog(false); // skip the old lines, so the next job's log starts clean
    announceIfDue(project);
  }

  // --- following a running job -------------------------------------------------------------
  // Over Server-Sent Events when the person chose live updates, else (or when the stream fails) by polling;
  // never both at once. Either way each new status object goes through applyStatus, each log line through appendLog.

  /* Follow the open project's running job, showing its log from `state.logFrom` on. */
  function follow(delay = POLL_MS) {
    stopFollowing();
    if (!isRunning(state.project)) return;
    if (state.liveUpdates && !state.fellBack && "EventSource" in window) return openStream();
    fetchLog();
    startPolling(delay);
  }

  function stopFollowing() {
    stopPolling();
    closeStream();
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
      $("#job-log").replaceChildren();
      state.logOffset = state.logFrom.offset;
      follow(0);
    });
  }

  function setLiveUpdates(on) {
    Object.assign(state, { liveUpdates: on, fellBack: false });
    try {
      localStorage.setItem(LIVE_UPDATES_KEY, on ? "on" : "off");
    } catch (error) {
      // Storage may be refused (private windows); the choice then lasts until the page reloads.
    }
    if (Boolean(state.stream) !== on) switchTransport();
    else render();
  }

  function startPolling(delay = POLL_MS) {
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

  async function pollStatus() {
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
      if (seq > stream.since) applyStatus({ id: project.id, ...status });
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

  /* A new status of the open project, from either transport; when its job has just ended, tell the person. */
  function applyStatus(status, etag = null) {
    const before = state.project;
    if (!before || before.id !== status.id) return;
    // A poll sent before a cancel can answer after it: an older version never overwrites a newer one.
    if (status.version < before.version) return;
    mergeStatus(status);
    state.etag = etag;
    if (isRunning(before) && !isRunning(status)) {
      stopFollowing();
      state.editingBrief = false;
      announceIfDue(state.project);
      loadProjects();
      loadBalance(); // a failed or cancelled job was refunded
    }
    render();
  }

  /* The log shown for a new job starts after its first event, at the line the log endpoint has reached by then. */
  function markLogStart(seq) {
    const from = { seq, offset: state.logOffset };
    state.logFrom = from;
    inOrder(() => {
      if (state.logFrom === from) from.offset = state.logOffset; // after a log read that was still on its way
    });
  }

  /* Log requests run one at a time, each from the offset the last one left: no line twice. */
  function fetchLog(show = true) {
    const generation = state.generation;
    return inOrder(() => readLog(show, generation));
  }

  function inOrder(work) {
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

  // --- telling people, exactly once ----------------------------------------------------------

  /* Adds `key` to the finished jobs this browser has announced; true if it was not there yet.
   * Every tab and every reload shares the list; `notified` on the server guards the rest. */
  function firstAnnouncement(key) {
    try {
      const keys = JSON.parse(localStorage.getItem(ANNOUNCED_KEY) || "[]");
      if (keys.includes(key)) return false;
      localStorage.setItem(ANNOUNCED_KEY, JSON.stringify([...keys, key].slice(-200)));
    } catch (error) {
      // Storage may be refused (private windows); then only `notified` guards.
    }
    return true;
  }

  function announceIfDue(project) {
    if (isRunning(project) || !project.completedAt || project.notified) return;
    const key = `${project.id}:${project.completedAt}`;
    if (firstAnnouncement(key)) {
      const [headline, kind] = finishMessage(project);
      toast(headline, titleOf(project), kind, project.id);
      notifyBrowser(headline, titleOf(project), key);
    }
    api("POST", `projects/${project.id}/notified`).catch(() => {});
  }

  function finishMessage(project) {
    if (project.status === "COMPLETED") return ["Your video is ready", "success"];
    if (project.status !== "FAILED") return ["Your script is ready", "success"];
    const reason = (project.error && project.error.message) || "the job stopped with an error.";
    return [`${jobName(project)} failed: ${reason}`, "error"];
  }

  function askNotificationPermission() {
    if ("Notification" in window && Notification.permission === "default") {
      Promise.resolve(Notification.requestPermission()).catch(() => {});
    }
  }

  function notifyBrowser(headline, body, tag) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      new Notification(headline, { body, tag });
    } catch (error) {
      // Some mobile browsers show notifications only through a service worker.
    }
  }

  function toast(headline, detail, kind, projectId = null) {
    const openable = projectId && !(state.project && state.project.id === projectId);
    const item = el("div", { class: `toast toast-${kind}` },
      el("p", { class: "toast-text" }, el("strong", {}, headline), detail ? el("span", {}, detail) : null),
      openable ? el("button", { type: "button", class: "small toast-open", "data-id": projectId }, "Open") : null,
      el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×"));
    $("#toasts").append(item);
    if (kind !== "error") setTimeout(() => item.remove(), 15000);
  }

  // --- credits ------------------------------------------------------------------------------

  const creditsText = (count) => `${count} credit${count === 1 ? "" : "s"}`;

  function showBalance(balance) {
    const badge = $("#credits-balance");
    if (!badge) return;
    badge.textContent = creditsText(balance);
    badge.hidden = false;
  }

  /* The balance moves when a job starts (a charge) and when one fails or is cancelled (a refund), so it is read
   * then, and on load: one read at a time, and one more if it moved meanwhile. */
  async function loadBalance() {
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
  function renderPrices(project) {
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
  function refusedStart(step, error) {
    if (error.code !== "insufficient_credits") return error;
    const { balance, price } = error.body;
    showBalance(balance);
    const job = step === "render" ? "Rendering this video" : "Writing this script";
    return Object.assign(error, { message: `${job} costs ${creditsText(price)}; you have ${balance}.`, fields: {} });
  }

  // --- "Your projects" ----------------------------------------------------------------------

  async function loadProjects(more = false) {
    const page = more ? state.nextPage : 1;
    if (!page) return;
    try {
      const { data } = await api("GET", `projects?page=${page}`);
      const before = new Map(state.projects.map((project) => [project.id, project]));
      const results = data.results.map(stamped);
      state.projects = more ? state.projects.concat(results) : results;
      state.nextPage = data.next ? page + 1 : null;
      // A job left running in the background (not the open one) is told about here.
      const ended = data.results.filter((project) => isRunning(before.get(project.id)) && !isRunning(project));
      ended.forEach(announceIfDue);
      if (ended.length) loadBalance();
      renderProjects();
    } catch (error) {
      // The list is a convenience; the next refresh tries again.
    }
  }

  function refreshIfOthersRun() {
    const openId = state.project && state.project.id;
    if (state.projects.some((project) => project.id !== openId && isRunning(project))) loadProjects();
  }

  function renderProjects() {
    const focused = document.activeElement && document.activeElement.closest(".project-item");
    $("#projects-list").replaceChildren(...state.projects.map(projectItem));
    $("#projects-empty").hidden = state.projects.length > 0;
    $("#more-projects-button").hidden = !state.nextPage;
    const again = focused && $(`.project-item[data-id="${CSS.escape(focused.dataset.id)}"]`);
    if (again) again.focus();
  }

  function projectItem(project) {
    const open = Boolean(state.project) && state.project.id === project.id;
    const percent = Math.round(project.progress || 0);
    const left = secondsLeft(project);
    const meta = el("span", { class: "project-meta" },
      el("span", { class: `badge badge-${project.status.toLowerCase()}` }, statusWords(project)),
      el("span", {}, `${percent}%`),
      left === null ? null : el("span", {}, remainingWords(left)),
      el("span", {}, `updated ${timeAgo(project.updatedAt)}`));
    const button = el("button", { type: "button", class: "project-item", "data-id": project.id, "aria-current": open ? "true" : null },
      el("span", { class: "project-title" }, project.title), meta,
      isRunning(project) ? el("span", { class: "mini-bar", "aria-hidden": "true" }, el("span", { style: `width: ${percent}%` })) : null);
    return el("li", {}, button);
  }

  function timeAgo(iso) {
    const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (!Number.isFinite(seconds) || seconds < 45) return "just now";
    const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
    const [unit, size] = units.find(([, length]) => seconds >= length) || units[2];
    return new Intl.RelativeTimeFormat("en", { numeric: "auto" }).format(-Math.round(seconds / size), unit);
  }

  // --- coming back ----------------------------------------------------------------------------

  async function offerResume(unfinished) {
    const candidate = unfinished.find((project) => isRunning(project) || project.status === "DRAFT");
    if (!candidate || state.project) return;
    let project;
    try {
      project = (await api("GET", `projects/${candidate.id}`)).data; // status objects carry no title
    } catch (error) {
      return;
    }
    if (state.project) return; // the person opened something meanwhile
    const dialog = $("#resume-dialog");
    const progress = isRunning(project) ? `, ${project.progress}%` : "";
    $("#resume-project").textContent = `“${project.title}” — ${statusWords(project)}${progress}`;
    dialog.returnValue = "";
    const choose = () => (dialog.returnValue === "continue" ? openProject(project.id) : startNew());
    dialog.addEventListener("close", choose, { once: true });
    dialog.showModal();
    $("#resume-continue").focus();
  }

  // --- wiring -----------------------------------------------------------------------------------

  function bindEvents() {
    const on = (selector, type, handler) => $(selector).addEventListener(type, handler);
    const busyClicks = {
      "#cancel-button": cancelJob,
      "#save-script-button": saveScript,
      "#render-button": renderVideo,
      "#rewrite-button": () => startStep("script", $("#review")),
      "#render-again-button": () => startStep("render", $("#watch")),
      "#retry-button": () => startStep(state.project.currentStep || "script", $("#failure")),
    };
    for (const [selector, work] of Object.entries(busyClicks)) {
      on(selector, "click", (event) => withBusy(event.currentTarget, work));
    }
    const clicks = {
      "#edit-brief-button": editBrief,
      "#failure-edit-brief-button": editBrief,
      "#back-to-review-button": showReview,
      "#watch-new-button": startNew,
      "#new-video-button": startNew,
      "#more-projects-button": () => loadProjects(true),
    };
    for (const [selector, handler] of Object.entries(clicks)) on(selector, "click", handler);
    on("#brief-form", "submit", submitBrief);
    on("#brief-text", "input", updateBriefCount);
    on("#live-updates", "change", (event) => setLiveUpdates(event.target.checked));
    on("#projects-list", "click", (event) => {
      const item = event.target.closest(".project-item");
      if (item) openProject(item.dataset.id);
    });
    on("#scenes", "input", (event) => {
      $("#script-saved").textContent = "Unsaved changes.";
      if (event.target.name === "seconds") renderPrices(state.project);
      if (event.target.name === "visual") $("img", event.target.closest(".scene")).alt = event.target.value;
    });
    on("#toasts", "click", (event) => {
      const item = event.target.closest(".toast");
      const open = event.target.closest(".toast-open");
      if (open || event.target.closest(".toast-close")) item.remove();
      if (open) openProject(open.dataset.id);
    });
    document.addEventListener("visibilitychange", () => {
      // Timers slept in the background; a stream did not.
      if (!document.hidden && isRunning(state.project) && !state.stream) startPolling(0);
    });
  }

  /* The person's last choice in this browser, else the server's default (CREATOR_USE_SSE). */
  function readLiveUpdates() {
    let stored = null;
    try {
      stored = localStorage.getItem(LIVE_UPDATES_KEY);
    } catch (error) {
      // Storage may be refused; then the server's default holds.
    }
    state.liveUpdates = stored ? stored === "on" : root.dataset.useSse === "true";
    $("#live-updates").checked = state.liveUpdates;
  }

  async function init() {
    readLiveUpdates();
    bindEvents();
    render();
    let ticks = 0;
    setInterval(() => {
      renderElapsed();
      renderRemaining();
      ticks += 1;
      if (ticks % 30 === 0) renderProjects(); // "updated 2 minutes ago" moves on
    }, 1000);
    setInterval(refreshIfOthersRun, POLL_MS * 4);
    loadBalance();
    try {
      const [, unfinished] = await Promise.all([loadProjects(), api("GET", "unfinished")]);
      unfinished.data.forEach(announceIfDue); // jobs that finished while the person was away
      await offerResume(unfinished.data);
    } catch (error) {
      // Without the unfinished list the page still works from a blank brief.
    }
  }

  init();
})();
