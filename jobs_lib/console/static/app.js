// The jobs_lib console: a client of the REST API (every figure and every action goes through /v1).
// Everything a job holds is shown as text: `el()` builds nodes and only ever creates text nodes
// from data, never markup, so a "<script>" in metadata, an error or a type stays text.

const POLL = { overview: 2000, jobs: 1500, job: 1000, schedules: 3000 };
const OFFLINE_RETRY = 2000;

const state = { config: null, me: null, token: null, tokenExp: 0, firebase: null, timer: null, view: null, online: true, pages: [] };

// -- small helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

const $ = (selector) => document.querySelector(selector);
const main = () => $("#main");

function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function json(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

function statusBadge(status) {
  return el("span", { class: `status ${status || "unknown"}`, "data-status": status || "" }, status || "?");
}

function can(permission) {
  return Boolean(state.me && state.me.permissions.includes(permission));
}

function notice(message, ok = false) {
  const box = $("#notice");
  box.textContent = message || "";
  box.className = ok ? "ok" : "";
  box.hidden = !message;
}

function setOnline(online) {
  state.online = online;
  $("#offline").hidden = online;
  document.body.dataset.online = online ? "yes" : "no";
}

// -- sign-in ---------------------------------------------------------------------------------------

function b64url(value) {
  return btoa(unescape(encodeURIComponent(JSON.stringify(value)))).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

// An unsigned ID token as the Firebase emulators accept it: for `jobs dev` without the Auth emulator
// only (the API accepts such tokens only while it runs in emulator mode).
function emulatorToken(user) {
  const now = Math.floor(Date.now() / 1000);
  const project = state.config.project;
  const claims = {
    iss: `https://securetoken.google.com/${project}`, aud: project, sub: user.uid, user_id: user.uid,
    iat: now - 5, auth_time: now - 5, exp: now + 3600, firebase: { identities: {}, sign_in_provider: "custom" }, ...user.claims,
  };
  return { token: `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`, exp: claims.exp };
}

function tokenExpiry(token) {
  try {
    const payload = JSON.parse(decodeURIComponent(escape(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")))));
    return Number(payload.exp) || 0;
  } catch {
    return 0;
  }
}

async function currentToken() {
  if (state.firebase) {
    try {
      return await state.firebase.getToken();
    } catch {
      return null;
    }
  }
  if (state.token && state.tokenExp * 1000 <= Date.now()) {
    signOut("Your session has expired: sign in again.");
    return null;
  }
  return state.token;
}

function keepToken(token) {
  state.token = token;
  state.tokenExp = tokenExpiry(token);
  sessionStorage.setItem("jobs.token", token);
}

function signOut(message) {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("jobs.token");
  if (state.firebase) state.firebase.signOut().catch(() => {});
  stopPolling();
  showSignIn(message);
}

async function startFirebase() {
  if (state.firebase) return state.firebase;
  const module = await import("./firebase-auth.js");
  state.firebase = module.start(state.config.firebase, state.config.authEmulator || null);
  return state.firebase;
}

function showSignIn(message) {
  $("#nav").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  const box = el("div", { class: "card signin", id: "signin" }, el("h2", {}, "Sign in to the jobs console"));
  if (message) box.append(el("p", { class: "error-text", id: "signin-message" }, message));
  const auth = state.config.auth;
  if (auth === "emulator-tokens") {
    box.append(el("p", { class: "muted" }, "Local development: pick a ready-made user (emulator tokens)."));
    for (const user of state.config.devUsers) {
      box.append(el("button", { type: "button", "data-user": user.uid, onclick: async () => { keepToken(emulatorToken(user).token); await enter(); } }, `Sign in as ${user.label}`));
    }
  } else if (auth === "firebase") {
    const email = el("input", { type: "email", name: "email", placeholder: "email", autocomplete: "username", required: true });
    const password = el("input", { type: "password", name: "password", placeholder: "password", autocomplete: "current-password", required: true });
    const form = el("form", {
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const firebase = await startFirebase();
          await firebase.signInWithEmail(email.value, password.value);
          await enter();
        } catch (err) {
          showSignIn(`Sign-in failed: ${err && err.message ? err.message : err}`);
        }
      },
    }, email, password, el("button", { type: "submit", class: "primary" }, "Sign in"));
    box.append(form);
    box.append(el("button", { type: "button", onclick: async () => {
      try {
        const firebase = await startFirebase();
        await firebase.signInWithGoogle();
        await enter();
      } catch (err) {
        showSignIn(`Sign-in failed: ${err && err.message ? err.message : err}`);
      }
    } }, "Sign in with Google"));
    if (state.config.devUsers) {
      box.append(el("p", { class: "muted" }, "Auth emulator users:"));
      for (const user of state.config.devUsers) {
        box.append(el("button", { type: "button", onclick: () => { email.value = user.email; password.value = user.password; form.requestSubmit(); } }, `Sign in as ${user.label}`));
      }
    }
  } else {
    box.append(el("p", {}, state.config.message || "Sign-in is not configured."));
  }
  main().replaceChildren(box);
}

// -- the API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = await currentToken();
  if (!token) throw new ApiError(401, "not signed in");
  headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    setOnline(false);
    throw new ApiError(0, "the API cannot be reached");
  }
  if ([502, 503, 504].includes(response.status)) {
    setOnline(false);
    throw new ApiError(response.status, "the API is unavailable");
  }
  setOnline(true);
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    signOut("Your session has expired or is no longer valid: sign in again.");
    throw new ApiError(401, (data.error && data.error.message) || "unauthenticated", data);
  }
  if (!response.ok) throw new ApiError(response.status, (data.error && data.error.message) || response.statusText, data);
  return data;
}

// -- polling ---------------------------------------------------------------------------------------

function stopPolling() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

function poll(view, refresh, every) {
  stopPolling();
  state.view = view;
  const tick = async () => {
    if (state.view !== view) return;
    let wait = every;
    try {
      await refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      if (err instanceof ApiError && err.status === 0) wait = OFFLINE_RETRY;
      else if (err instanceof ApiError) notice(err.message);
      else throw err;
    }
    if (state.view === view) state.timer = setTimeout(tick, wait);
  };
  tick();
}

// -- routing ---------------------------------------------------------------------------------------

function route() {
  if (!state.me) return;
  notice("");
  const hash = location.hash.replace(/^#/, "") || "/overview";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", path.startsWith(`/${link.dataset.view}`));
  const jobMatch = path.match(/^\/jobs\/(.+)$/);
  if (jobMatch) return showJob(decodeURIComponent(jobMatch[1]));
  if (path.startsWith("/jobs")) return showJobs(params);
  if (path.startsWith("/schedules")) return showSchedules();
  return showOverview();
}

async function enter() {
  try {
    state.me = await api("/v1/me");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showSignIn(`Cannot sign in: ${err.message}`);
    return;
  }
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  const role = state.me.operator ? (can("jobs.retry") ? "operator" : "viewer") : state.me.orgAdmin ? `admin of ${state.me.orgId}` : "user";
  $("#who").textContent = `${state.me.uid} (${role})`;
  route();
}

function listScope() {
  if (state.me.operator) return "all";
  if (state.me.orgAdmin) return "org";
  return "mine";
}

// -- overview --------------------------------------------------------------------------------------

function showOverview() {
  const table = el("tbody");
  const chartBox = el("div", { class: "card", id: "chart" });
  const generated = el("span", { class: "muted", id: "generated" });
  main().replaceChildren(
    el("h2", {}, "Overview ", generated),
    el("div", { class: "card" }, el("table", { id: "queues" },
      el("thead", {}, el("tr", {}, ["type", "state", "due", "delayed", "running", "oldest due", "done 1 h", "failed 1 h", "cancelled 1 h", "done 24 h", "failed 24 h", "concurrency", ""].map((h, i) => el("th", { class: i > 1 && i < 11 ? "num" : "" }, h)))),
      table)),
    chartBox,
  );
  poll("overview", async () => {
    const data = await api("/v1/overview");
    generated.textContent = `as of ${when(data.generatedAt)} · ${data.reads} reads`;
    table.replaceChildren(...data.types.flatMap((t) => t.fair && t.fair.keys.length ? [overviewRow(t), fairRow(t)] : [overviewRow(t)]));
    if (data.chart) drawChart(chartBox, data.chart);
    else chartBox.replaceChildren(el("p", { class: "muted" }, "The per-minute chart covers every organisation; it is shown to operators."));
  }, POLL.overview);
}

function overviewRow(t) {
  const manage = state.me.operator && can("queues.manage");
  const action = manage
    ? el("button", { type: "button", "data-action": t.paused ? "resume" : "pause", onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api(`/v1/queues/${encodeURIComponent(t.type)}/${t.paused ? "resume" : "pause"}`, { method: "POST" });
        notice(`${t.type} ${t.paused ? "resumed" : "paused"}`, true);
      } catch (err) {
        notice(`Could not change ${t.type}: ${err.message}`);
      }
    } }, t.paused ? "Resume" : "Pause")
    : null;
  const concurrency = t.concurrency ? `${t.concurrency.inUse ?? "?"} / ${t.concurrency.limit}${t.concurrency.per ? ` per ${t.concurrency.per}` : ""}` : "–";
  const link = (status, text) => el("a", { href: `#/jobs?type=${encodeURIComponent(t.type)}&status=${status}` }, String(text));
  return el("tr", { "data-type": t.type },
    el("td", {}, t.type),
    el("td", { "data-figure": "state" }, t.paused ? el("span", { class: "paused" }, "paused")
      : t.breaker ? el("span", { class: "paused", title: t.breaker.lastError || "" }, t.breaker.state === "open" ? `breaker open until ${when(t.breaker.openUntil)}` : "breaker half-open: probing")
      : "running"),
    el("td", { class: "num", "data-figure": "due" }, link("pending", t.due)),
    el("td", { class: "num", "data-figure": "delayed" }, String(t.delayed)),
    el("td", { class: "num", "data-figure": "inProgress" }, link("in_progress", t.inProgress)),
    el("td", { class: "num", "data-figure": "oldestDue" }, ago(t.oldestDueSeconds)),
    el("td", { class: "num", "data-figure": "completedHour" }, link("completed", t.lastHour.completed)),
    el("td", { class: "num", "data-figure": "failedHour" }, link("failed", t.lastHour.failed)),
    el("td", { class: "num" }, String(t.lastHour.cancelled)),
    el("td", { class: "num" }, String(t.lastDay.completed)),
    el("td", { class: "num" }, String(t.lastDay.failed)),
    el("td", {}, concurrency),
    el("td", {}, action),
  );
}

function fairRow(t) {
  // A fair type's largest keys (fair_key): due and running jobs, and the weight of each.
  const keys = t.fair.keys.map((k) => el("li", { "data-key": k.key },
    `${k.key}: ${k.due} due, ${k.running} running${k.weight !== 1 ? `, weight ${k.weight}` : ""}`));
  return el("tr", { class: "fair", "data-fair-type": t.type },
    el("td", {}, ""),
    el("td", { colspan: "12" },
      el("span", { class: "muted" }, `fair shares by ${t.fair.field} (${t.fair.keysWithJobs} keys with jobs): `),
      el("ul", { class: "fair-keys" }, ...keys)));
}

function drawChart(box, chart) {
  const width = 1000;
  const height = 150;
  const n = chart.minutes.length;
  const peak = Math.max(1, ...chart.completed.map((c, i) => c + chart.failed[i]));
  const bar = width / n;
  const plot = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height + 16}`, preserveAspectRatio: "none", role: "img", "aria-label": "completions and failures per minute" });
  chart.minutes.forEach((minute, i) => {
    const done = (chart.completed[i] / peak) * height;
    const failed = (chart.failed[i] / peak) * height;
    if (done) plot.append(svg("rect", { class: "completed", x: i * bar, y: height - done, width: Math.max(bar - 0.5, 0.5), height: done }));
    if (failed) plot.append(svg("rect", { class: "failed", x: i * bar, y: height - done - failed, width: Math.max(bar - 0.5, 0.5), height: failed }));
  });
  const first = svg("text", { x: 0, y: height + 13 });
  first.textContent = when(chart.minutes[0]);
  const last = svg("text", { x: width, y: height + 13, "text-anchor": "end" });
  last.textContent = when(chart.minutes[n - 1]);
  plot.append(first, last);
  const total = chart.completed.reduce((a, b) => a + b, 0);
  const failures = chart.failed.reduce((a, b) => a + b, 0);
  box.replaceChildren(
    el("h3", {}, `Completions and failures per minute, last ${Math.round(n / 60)} hours (peak ${peak}/min)`),
    el("div", { class: "legend" }, el("span", {}, el("i", { class: "sw completed-sw" }), `completed ${total}`), el("span", {}, el("i", { class: "sw failed-sw" }), `failed ${failures}`)),
    plot,
  );
}

// -- jobs ------------------------------------------------------------------------------------------

function showJobs(params) {
  const field = (name, label, input) => el("label", {}, label, input);
  const status = el("select", { name: "status" }, ["", "pending", "in_progress", "completed", "failed", "cancelled"].map((s) => el("option", { value: s, selected: params.get("status") === s }, s || "any status")));
  const type = el("input", { name: "type", value: params.get("type") || "", placeholder: "any type" });
  const org = el("input", { name: "org", value: params.get("org") || "", placeholder: "any org", disabled: !state.me.operator });
  const creator = el("input", { name: "creator", value: params.get("creator") || "", placeholder: "anyone", disabled: !state.me.operator });
  const from = el("input", { name: "from", type: "datetime-local", value: params.get("from") || "" });
  const to = el("input", { name: "to", type: "datetime-local", value: params.get("to") || "" });
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [key, input] of Object.entries({ status, type, org, creator, from, to })) if (input.value) next.set(key, input.value);
    location.hash = `#/jobs?${next}`;
  } }, field("status", "Status", status), field("type", "Type", type), field("org", "Org", org), field("creator", "Creator", creator), field("from", "Created from (UTC)", from), field("to", "to", to), el("button", { type: "submit" }, "Filter"));
  const rows = el("tbody");
  const pager = el("div", { class: "actions" });
  const bulk = el("div", { id: "bulk" });
  main().replaceChildren(el("h2", {}, "Jobs"), form, bulk, el("div", { class: "card" }, el("table", { id: "jobs" }, el("thead", {}, el("tr", {}, ["id", "type", "status", "attempts", "created", "org", "creator", "error"].map((h) => el("th", {}, h)))), rows)), pager);
  const query = new URLSearchParams({ scope: listScope(), pageSize: "25" });
  if (params.get("status")) query.set("status", params.get("status"));
  if (params.get("type")) query.set("type", params.get("type"));
  if (params.get("org") && state.me.operator) query.set("orgId", params.get("org"));
  if (params.get("creator") && state.me.operator) query.set("createdBy", params.get("creator"));
  if (params.get("from")) query.set("createdAfter", new Date(`${params.get("from")}Z`).toISOString());
  if (params.get("to")) query.set("createdBefore", new Date(`${params.get("to")}Z`).toISOString());
  const key = query.toString();
  if (!state.pages.length || state.pages[0].key !== key) state.pages = [{ key, token: null }];
  if (params.get("status") === "failed" && state.me.operator && can("jobs.retry")) bulk.append(bulkRetry(params));
  poll("jobs", async () => {
    const page = state.pages[state.pages.length - 1];
    const pageQuery = new URLSearchParams(query);
    if (page.token) pageQuery.set("pageToken", page.token);
    const data = await api(`/v1/jobs?${pageQuery}`);
    rows.replaceChildren(...(data.jobs.length ? data.jobs.map(jobRow) : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No jobs match."))]));
    pager.replaceChildren(
      el("button", { type: "button", disabled: state.pages.length < 2, onclick: () => { state.pages.pop(); route(); } }, "Previous page"),
      el("button", { type: "button", disabled: !data.nextPageToken, onclick: () => { state.pages.push({ key, token: data.nextPageToken }); route(); } }, "Next page"),
    );
  }, POLL.jobs);
}

function jobRow(job) {
  return el("tr", { "data-job": job.id },
    el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
    el("td", {}, job.type || "?"),
    el("td", {}, statusBadge(job.status)),
    el("td", { class: "num" }, `${job.attempts}${job.maxAttempts ? ` / ${job.maxAttempts}` : ""}`),
    el("td", {}, when(job.createdAt)),
    el("td", {}, job.orgId || "–"),
    el("td", {}, job.createdBy || "–"),
    el("td", { class: "error-text" }, job.error ? job.error.slice(0, 120) : ""),
  );
}

function bulkRetry(params) {
  const box = el("div");
  const start = el("button", { type: "button", id: "retry-all", onclick: async () => {
    const query = new URLSearchParams({ status: "failed" });
    if (params.get("type")) query.set("type", params.get("type"));
    if (params.get("org")) query.set("orgId", params.get("org"));
    let count;
    try {
      count = (await api(`/v1/jobs:count?${query}`)).count;
    } catch (err) {
      notice(`Could not count the failed jobs: ${err.message}`);
      return;
    }
    const what = `${count} failed job${count === 1 ? "" : "s"}${params.get("type") ? ` of type ${params.get("type")}` : ""}${params.get("org") ? ` in ${params.get("org")}` : ""}`;
    box.replaceChildren(el("div", { class: "confirm", id: "confirm" },
      el("span", {}, `Retry ${what}?`),
      el("button", { type: "button", class: "primary", id: "confirm-retry", onclick: async () => {
        try {
          const done = await api("/v1/jobs:retryFailed", { method: "POST", body: { type: params.get("type") || null, orgId: params.get("org") || null, expected: count } });
          notice(`Retried ${done.retried} failed job${done.retried === 1 ? "" : "s"}.`, true);
        } catch (err) {
          notice(`Retry failed: ${err.message}`);
        }
        box.replaceChildren(start);
      } }, `Retry ${count}`),
      el("button", { type: "button", onclick: () => box.replaceChildren(start) }, "Cancel"),
    ));
  } }, "Retry all failed jobs matching this filter");
  box.append(start);
  return box;
}

// -- one job ---------------------------------------------------------------------------------------

function logQuery(job) {
  return `jsonPayload.jobId="${job.id}"`;
}

function showJob(jobId) {
  const body = el("div", { id: "job" });
  main().replaceChildren(el("p", {}, el("a", { href: "#/jobs" }, "← Jobs")), body);
  poll("job", async () => {
    const data = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    body.replaceChildren(...jobDetails(data));
  }, POLL.job);
}

function progressBar(percent) {
  const fill = el("div", { "data-percent": percent ?? 0 });
  fill.style.width = `${percent ?? 0}%`; // through the CSSOM: the CSP allows no inline style attributes
  return el("div", { class: "progress", role: "progressbar", "aria-valuenow": percent ?? 0, "aria-valuemin": 0, "aria-valuemax": 100 }, fill);
}

function durableCard(job) {
  // A durable job's steps, slices and sleeps (jobs_lib.engine.durable); nothing for a job without them.
  const steps = job.steps || [];
  const sleeps = job.sleeps || [];
  if (!steps.length && !job.continuations && !sleeps.length) return null;
  const slices = job.sliceMs || [];
  return el("div", { class: "card", id: "durable" },
    el("h3", {}, "Steps and slices"),
    el("dl", { class: "facts" }, [
      [el("dt", {}, "continuations"), el("dd", { id: "continuations" }, String(job.continuations || 0))],
      [el("dt", {}, "slices (ms)"), el("dd", { id: "slices" }, slices.length ? slices.join(", ") : "–")],
      [el("dt", {}, "time over all slices"), el("dd", {}, `${((job.activeMs || 0) / 1000).toFixed(1)} s`)],
      [el("dt", {}, "sleeps until"), el("dd", { id: "sleeps" }, sleeps.length ? sleeps.map(when).join(", ") : "–")],
    ]),
    steps.length ? el("table", { id: "steps" },
      el("thead", {}, el("tr", {}, ["step", "recorded", "attempt", "ms", "bytes", "kept"].map((h) => el("th", {}, h)))),
      el("tbody", {}, steps.map((s) => el("tr", { "data-step": s.name },
        el("td", {}, s.name), el("td", {}, when(s.at)), el("td", { class: "num" }, String(s.attempt ?? "–")),
        el("td", { class: "num" }, s.ms == null ? "–" : String(Math.round(s.ms))), el("td", { class: "num" }, String(s.size ?? "–")),
        el("td", {}, s.stored === "document" ? "own document" : "in the job")))),
    ) : el("p", { class: "muted" }, "No steps recorded."),
  );
}

function jobDetails({ job, canCancel, canRetry }) {
  const progress = job.progress || {};
  const percent = typeof progress.percent === "number" ? Math.max(0, Math.min(100, progress.percent)) : null;
  const actions = el("div", { class: "actions", id: "job-actions" });
  const act = (verb) => async (event) => {
    event.target.disabled = true;
    try {
      await api(`/v1/jobs/${encodeURIComponent(job.id)}/${verb}`, { method: "POST" });
      notice(`Job ${job.id}: ${verb === "retry" ? "sent back to pending" : "cancel requested"}`, true);
    } catch (err) {
      notice(`Could not ${verb} job ${job.id}: ${err.message}`);
    }
  };
  if (canCancel) actions.append(el("button", { type: "button", class: "danger", "data-action": "cancel", onclick: act("cancel") }, "Cancel"));
  if (canRetry) actions.append(el("button", { type: "button", class: "primary", "data-action": "retry", onclick: act("retry") }, "Retry"));
  const facts = (pairs) => el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const details = job.errorDetails || null;
  const traceback = details && typeof details.traceback === "string" ? details.traceback : null;
  const otherDetails = details ? Object.fromEntries(Object.entries(details).filter(([k]) => k !== "traceback")) : null;
  const query = logQuery(job);
  const project = state.config.project;
  return [
    el("h2", {}, `Job ${job.id} `, statusBadge(job.status)),
    actions,
    el("div", { class: "card" }, facts([
      ["type", job.type || "?"],
      ["attempts", `${job.attempts}${job.maxAttempts ? ` of ${job.maxAttempts}` : ""}`],
      ["priority", String(job.priority)],
      ["org / creator", `${job.orgId || "–"} / ${job.createdBy || "–"}`],
      ["cancel requested", job.cancelRequested ? "yes" : "no"],
      ["lease holder", job.leaseHolder || "–"],
      ["lease expires", when(job.leaseExpiresAt)],
    ])),
    el("div", { class: "card", id: "progress" },
      el("h3", {}, "Progress"),
      progressBar(percent),
      el("p", { id: "progress-text" }, percent === null ? "no progress reported" : `${percent}%${progress.message ? ` · ${progress.message}` : ""}${progress.totalSteps ? ` · step ${progress.currentStep ?? 0} of ${progress.totalSteps}` : ""}`),
    ),
    el("div", { class: "card" }, el("h3", {}, "Timeline"), facts([
      ["created", when(job.createdAt)], ["scheduled for", when(job.scheduledFor)], ["started", when(job.startedAt)],
      ["completed", when(job.completedAt)], ["updated", when(job.updatedAt)],
    ])),
    durableCard(job),
    el("div", { class: "card" },
      el("h3", {}, "Metadata"), el("pre", { id: "metadata" }, json(job.metadata)),
      el("h3", {}, "Result"), el("pre", { id: "result" }, json(job.result)),
      job.error ? [el("h3", {}, "Error"), el("pre", { id: "error", class: "error-text" }, job.error)] : null,
      otherDetails && Object.keys(otherDetails).length ? el("pre", { id: "error-details" }, json(otherDetails)) : null,
      traceback ? el("details", {}, el("summary", {}, "Traceback"), el("pre", { id: "traceback" }, traceback)) : null,
    ),
    el("div", { class: "card" },
      el("h3", {}, "Logs"),
      el("p", {}, "Cloud Logging query for this job's lines:"),
      el("pre", { id: "log-query" }, query),
      el("a", { href: `https://console.cloud.google.com/logs/query;query=${encodeURIComponent(query)}?project=${encodeURIComponent(project)}`, target: "_blank", rel: "noopener noreferrer" }, "Open in Cloud Logging"),
    ),
  ];
}

// -- schedules -------------------------------------------------------------------------------------

function showSchedules() {
  const rows = el("tbody");
  main().replaceChildren(el("h2", {}, "Schedules"), el("div", { class: "card" }, el("table", { id: "schedules" }, el("thead", {}, el("tr", {}, ["id", "type", "cron", "timezone", "enabled", "next run", "last run", "last job", "error", ""].map((h) => el("th", {}, h)))), rows)));
  const scope = state.me.operator ? "all" : state.me.orgAdmin ? "org" : "mine";
  poll("schedules", async () => {
    const data = await api(`/v1/schedules?scope=${scope}&pageSize=100`);
    rows.replaceChildren(...(data.schedules.length ? data.schedules.map(scheduleRow) : [el("tr", {}, el("td", { colspan: 10, class: "muted" }, "No schedules."))]));
  }, POLL.schedules);
}

function scheduleRow(s) {
  const editable = can("schedules.update") && (state.me.operator || s.createdBy === state.me.uid);
  const act = (path, label) => el("button", { type: "button", "data-action": path, onclick: async (event) => {
    event.target.disabled = true;
    try {
      const done = await api(`/v1/schedules/${encodeURIComponent(s.id)}/${path}`, { method: "POST" });
      notice(path === "fire" ? `Schedule ${s.id} fired: job ${done.jobId}` : `Schedule ${s.id} ${path}d`, true);
    } catch (err) {
      notice(`Could not ${label.toLowerCase()} ${s.id}: ${err.message}`);
    }
  } }, label);
  return el("tr", { "data-schedule": s.id },
    el("td", {}, s.id), el("td", {}, s.type || "?"), el("td", {}, s.cron || "?"), el("td", {}, s.timezone),
    el("td", {}, s.enabled ? "yes" : "no"), el("td", {}, when(s.nextRunAt)), el("td", {}, when(s.lastRunAt)),
    el("td", {}, s.lastJobId ? el("a", { href: `#/jobs/${encodeURIComponent(s.lastJobId)}` }, s.lastJobId) : "–"),
    el("td", { class: "error-text" }, s.error || ""),
    el("td", {}, editable ? [s.enabled ? act("disable", "Disable") : act("enable", "Enable"), " ", act("fire", "Fire now")] : null),
  );
}

// -- start -----------------------------------------------------------------------------------------

async function boot() {
  const response = await fetch("config.json");
  state.config = await response.json();
  $("#signout").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", () => { stopPolling(); route(); });
  window.addEventListener("online", () => route());
  const saved = sessionStorage.getItem("jobs.token");
  if (state.config.auth === "emulator-tokens" && saved) {
    keepToken(saved);
    if (state.tokenExp * 1000 > Date.now()) return enter();
    return signOut("Your session has expired: sign in again.");
  }
  if (state.config.auth === "firebase" && state.config.firebase && state.config.firebase.apiKey) {
    try {
      const firebase = await startFirebase();
      if (await firebase.restored()) return enter();
    } catch (err) {
      return showSignIn(`Firebase sign-in could not start: ${err.message}`);
    }
  }
  showSignIn("");
}

boot();
