// The job console: every call goes to this Factory's own API, with the key the user typed.
// The key lives in sessionStorage (this tab only), never in localStorage, a cookie or the URL.
"use strict";
(() => {
  const KEY = "aifactory.apiKey";
  const POLL_MS = 2000;
  const PAGE_SIZE = 20;
  const ENDED = new Set(["Completed", "Failed", "Stopped"]);
  // The API's routes sit beside /console, under the same stage (/prod/console -> /prod/).
  const API = location.pathname.replace(/\/console\/?$/, "") + "/";
  const $ = (id) => document.getElementById(id);

  const state = { pages: [null], page: 0, status: "", timer: null, statuses: new Map(), job: null };

  // ---- the API ----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function call(route, body) {
    const key = sessionStorage.getItem(KEY);
    if (!key) throw new ApiError(403, "Sign in with an API key.");
    const response = await fetch(API + route, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": key },
      body: JSON.stringify(body || {}),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const message = (data && data.message) || `HTTP ${response.status}`;
      throw new ApiError(response.status, message);
    }
    return { data, headers: response.headers };
  }

  // ---- helpers ------------------------------------------------------------------------------
  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }
  const utc = (s) => (s ? Date.parse(s.replace(" ", "T") + "Z") : NaN);
  function duration(from, to) {
    const start = utc(from);
    if (Number.isNaN(start)) return "";
    const end = to ? utc(to) : Date.now();
    let s = Math.max(0, Math.round((end - start) / 1000));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return (h ? `${h} h ` : "") + (h || m ? `${m} min ` : "") + `${s} s`;
  }
  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }
  function fail(err) {
    if (err instanceof ApiError && err.status === 403) {
      // A key the API refuses: back to the sign-in, with the API's own message.
      sessionStorage.removeItem(KEY);
      showSignedIn(false);
    }
    showError(err.message);
  }
  function schedule(fn) {
    clearTimeout(state.timer);
    state.timer = fn ? setTimeout(fn, POLL_MS) : null;
  }
  function showSignedIn(on) {
    $("sign-in").hidden = on;
    $("sign-out").hidden = !on;
    if (!on) { $("jobs").hidden = true; $("job").hidden = true; schedule(null); }
  }

  // ---- the job list -------------------------------------------------------------------------
  async function jobStatus(name) {
    const known = state.statuses.get(name);
    if (known && ENDED.has(known.status)) return known;
    const { data } = await call("check_training_status", { job_name: name });
    state.statuses.set(name, data);
    return data;
  }

  async function loadList() {
    // An answer to an older request (another page or filter) never overwrites a newer one.
    const request = (state.listRequest = (state.listRequest || 0) + 1);
    const body = { limit: PAGE_SIZE };
    if (state.status) body.status = state.status;
    const token = state.pages[state.page];
    if (token) body.next_token = token;
    const { data, headers } = await call("check_trained_job", body);
    const next = headers.get("X-Next-Token");
    state.pages.length = state.page + 1;
    if (next) state.pages.push(next);
    const details = await Promise.all(data.map((job) => jobStatus(job.TrainingJobName)));
    if (request !== state.listRequest) return;
    const rows = $("job-table").tBodies[0];
    // Rows are rebuilt only when what they show changed, so a link stays put between polls.
    const shown = JSON.stringify(data.map((job, i) => [job, details[i].status,
      details[i].secondary_status, details[i].training_end_time]));
    if (shown !== state.listShown) {
      state.listShown = shown;
      rows.replaceChildren();
    }
    if (rows.children.length === 0) data.forEach((job, i) => {
      const detail = details[i];
      const tr = el("tr");
      const name = el("td");
      name.append(el("a", job.TrainingJobName, { href: "#job=" + encodeURIComponent(job.TrainingJobName) }));
      tr.append(
        name,
        el("td", detail.status),
        el("td", detail.secondary_status || ""),
        el("td", job.CreationTime),
        el("td", duration(job.CreationTime, detail.training_end_time)),
      );
      rows.append(tr);
    });
    $("no-jobs").hidden = data.length > 0;
    $("first-page").disabled = state.page === 0;
    $("next-page").disabled = state.pages.length <= state.page + 1;
    // Refresh while anything on the page runs; stop when nothing does.
    const running = details.some((d) => !ENDED.has(d.status));
    schedule(running ? () => loadList().catch(fail) : null);
  }

  function showList() {
    $("job").hidden = true;
    $("jobs").hidden = false;
    state.job = null;
    loadList().then(() => showError(""), fail);
  }

  // ---- one job ------------------------------------------------------------------------------
  const STEPS = [
    ["created", "Created"], ["staged", "Staged"], ["queued", "Queued"],
    ["training", "Training"], ["ended", "Ended"],
  ];

  function timeline(s) {
    const staging = s.secondary_status === "Staging";
    const queued = s.secondary_status === "Queued";
    const ended = ENDED.has(s.status);
    const started = Boolean(s.training_start_time);
    const reached = {
      created: [true, s.creation_time],
      staged: [!staging && (queued || started || ended || Boolean(s.queued_at)),
        s.staged_records !== undefined ? `${s.staged_records} records` : ""],
      queued: [Boolean(s.queued_at), s.queued_at || ""],
      training: [started, s.training_start_time || ""],
      ended: [ended, ended ? `${s.status} ${s.training_end_time || ""}` : ""],
    };
    const current = ended ? null : staging ? "staged" : queued ? "queued" : started ? "training" : null;
    const list = $("timeline");
    list.replaceChildren();
    for (const [id, label] of STEPS) {
      const [done, when] = reached[id];
      const item = el("li", null, { "data-step": id });
      item.append(el("strong", label), el("span", when || ""));
      if (id === current) item.classList.add("current");
      else if (done) item.classList.add("done");
      if (id === "ended" && s.status === "Failed") item.classList.add("failed");
      list.append(item);
    }
  }

  let lossPlot = null;
  let f1Plot = null;
  function chartWidth(node) { return Math.max(300, node.clientWidth || 600); }

  function drawLoss(series) {
    const box = $("loss-chart");
    const points = series || [];
    $("no-loss").hidden = points.length > 0;
    if (!points.length) { box.replaceChildren(); lossPlot = null; return; }
    // x: seconds since the first point (the series are per-minute averages once deployed).
    const first = utc(points[0].timestamp);
    const xs = points.map((p) => (utc(p.timestamp) - first) / 1000);
    const ys = points.map((p) => p.value);
    if (lossPlot) { lossPlot.setData([xs, ys]); return; }
    box.replaceChildren();
    lossPlot = new uPlot({
      width: chartWidth(box), height: 240,
      scales: { x: { time: false } },
      series: [{ label: "seconds" },
        { label: "train:loss", stroke: "#1f6feb", width: 2, points: { show: points.length < 40 } }],
      axes: [{ label: `seconds since ${points[0].timestamp} UTC` }, { label: "loss" }],
    }, [xs, ys], box);
  }

  function drawReport(report) {
    const has = Boolean(report && report.details && report.details.length);
    $("report-box").hidden = !has;
    $("no-report").hidden = has;
    if (!has) return;
    const rows = $("report").tBodies[0];
    rows.replaceChildren();
    const line = (name, row) => {
      const tr = el("tr");
      tr.append(el("th", name, { scope: "row" }));
      for (const metric of ["precision", "recall", "f1-score", "support"]) {
        tr.append(el("td", row[metric] ?? "", { class: "num" }));
      }
      rows.append(tr);
    };
    report.details.forEach((row) => line(row.no, row));
    if (report.avg) line("weighted avg", report.avg);
    if (f1Plot) return;  // a report does not change once the job has ended
    const names = report.details.map((row) => String(row.no));
    const f1 = report.details.map((row) => Number(row["f1-score"]));
    const box = $("f1-chart");
    box.setAttribute("aria-label", "F1 per class: " + names.map((n, i) => `${n} ${f1[i]}`).join(", "));
    f1Plot = new uPlot({
      width: chartWidth(box), height: 220,
      scales: { x: { time: false, range: [-0.5, names.length - 0.5] }, y: { range: [0, 1] } },
      series: [{}, { label: "F1", fill: "#1f6feb88", stroke: "#1f6feb",
        paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
      axes: [
        { splits: () => names.map((_, i) => i), values: () => names },
        { label: "F1" },
      ],
      legend: { show: false },
    }, [names.map((_, i) => i), f1], box);
  }

  function drawCallback(callback) {
    const c = callback || {};
    let text = c.state || "unknown";
    if (c.attempts) text += `, ${c.attempts} attempt(s)`;
    if (c.last_error) text += ` (last error: ${c.last_error})`;
    if (c.next_attempt_at) text += `, next attempt ${c.next_attempt_at}`;
    $("callback-state").textContent = text;
  }

  async function loadLogs(name, running) {
    const job = state.job;
    let more = true;
    while (more && state.job === job) {
      const body = { job_name: name, limit: 500 };
      if (job.logToken) body.next_token = job.logToken;
      const { data } = await call("get_training_logs", body);
      const log = $("log");
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      for (const event of data.events || []) log.append(`${event.timestamp} ${event.message}\n`);
      // Keep the tail only: the last 2,000 lines.
      while (log.childNodes.length > 2000) log.firstChild.remove();
      if (atEnd) log.scrollTop = log.scrollHeight;
      if (data.next_token) job.logToken = data.next_token;
      more = (data.events || []).length === 500 && Boolean(data.next_token);
    }
  }

  async function loadJob(name) {
    const job = state.job;
    const { data: s } = await call("check_training_status", { job_name: name });
    if (state.job !== job) return;
    state.statuses.set(name, s);
    const running = !ENDED.has(s.status);
    $("job-status").textContent = s.status;
    $("job-secondary").textContent = s.secondary_status || "";
    $("job-failure").textContent = s.failure_reason || "none";
    timeline(s);
    const progress = s.progress;
    $("progress-box").hidden = !(progress && running);
    if (progress) {
      $("progress").value = progress.percent;
      $("progress-text").textContent = `step ${progress.step} of ${progress.total_steps} (${progress.percent} %)`;
    }
    $("stop").hidden = !(running && s.status !== "Stopping");
    $("redeliver").hidden = running;
    drawCallback(s.callback);
    drawReport(s.report);
    const [metrics] = await Promise.all([
      call("get_training_metrics", { job_name: name }).then((r) => r.data, () => null),
      loadLogs(name, running).catch(() => null),
    ]);
    if (state.job !== job) return;
    drawLoss(metrics && metrics.metrics ? metrics.metrics["train:loss"] : null);
    if (s.status === "Completed" && !job.modelUrl) {
      try {
        const { data } = await call("get_model_url", { job_name: name });
        job.modelUrl = data.model;
      } catch (_) { /* no model: the link stays hidden */ }
    }
    const link = $("download");
    link.hidden = !job.modelUrl;
    if (job.modelUrl) link.href = job.modelUrl;
    // Follow the job while it runs; once it has ended, nothing changes: stop polling.
    schedule(running && state.job === job ? () => loadJob(name).catch(fail) : null);
  }

  function showJob(name) {
    $("jobs").hidden = true;
    $("job").hidden = false;
    $("job-name").textContent = name;
    $("log").replaceChildren();
    $("download").hidden = true;
    $("f1-chart").replaceChildren();
    $("loss-chart").replaceChildren();
    lossPlot = null; f1Plot = null;
    state.job = { name, logToken: null, modelUrl: null };
    schedule(null);
    loadJob(name).then(() => showError(""), fail);
  }

  // ---- navigation: #job=NAME or the list (the key is never part of the URL) -----------------
  function route() {
    if (!sessionStorage.getItem(KEY)) { showSignedIn(false); return; }
    showSignedIn(true);
    const match = location.hash.match(/^#job=(.+)$/);
    if (match) showJob(decodeURIComponent(match[1]));
    else showList();
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    input.value = "";
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    try {
      await call("check_trained_job", { limit: 1 });  // does the API take this key?
      showError("");
      route();
    } catch (err) {
      fail(err);
    }
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    state.statuses.clear();
    showError("");
    showSignedIn(false);
    history.replaceState(null, "", location.pathname);
  });
  $("status-filter").addEventListener("change", (event) => {
    state.status = event.target.value;
    state.pages = [null];
    state.page = 0;
    loadList().catch(fail);
  });
  $("next-page").addEventListener("click", () => { state.page += 1; loadList().catch(fail); });
  $("first-page").addEventListener("click", () => { state.page = 0; loadList().catch(fail); });
  $("stop").addEventListener("click", async () => {
    const name = state.job && state.job.name;
    if (!name) return;
    $("stop").disabled = true;
    try {
      await call("stop_training_job", { job_name: name });
      await loadJob(name);
    } catch (err) { fail(err); } finally { $("stop").disabled = false; }
  });
  $("redeliver").addEventListener("click", async () => {
    const name = state.job && state.job.name;
    if (!name) return;
    try {
      await call("redeliver_callback", { job_name: name });
      $("callback-state").textContent = "redelivery accepted";
      setTimeout(() => loadJob(name).catch(fail), 1000);
    } catch (err) { fail(err); }
  });
  window.addEventListener("hashchange", route);
  route();
})();
