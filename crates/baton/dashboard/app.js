// Baton's dashboard: a page per subsystem, drawn from the HTTP API and refreshed every few
// seconds without reloading. Plain JavaScript, no build step. Every value from the server is
// put in the page as text (never as HTML).

const REFRESH_MS = 2000;
const TOKEN_KEY = "baton-token";
const STATES = ["pending", "running", "succeeded", "failed", "canceled"];

const main = document.getElementById("main");
const live = document.getElementById("live");
const logout = document.getElementById("logout");

// ---- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Calls the API; answers its JSON (or, with `text`, its text). Errors carry the status. */
async function api(path, { method = "GET", body, text: asText = false } = {}) {
  const headers = { accept: asText ? "text/plain" : "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.ok && asText) return text;
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: only an error answer from something in front of the server can be.
  }
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || response.statusText);
  }
  return data;
}

// ---- drawing helpers -----------------------------------------------------------------------

/** An element with attributes (`on…` keys add listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function time(ms) {
  if (ms === undefined || ms === null) return "—";
  return new Date(ms).toLocaleString();
}

function ago(ms) {
  if (ms === undefined || ms === null) return "—";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  return `${Math.floor(seconds / 3600)}h ago`;
}

function state(name) {
  return h("span", { class: `state state-${name}` }, name);
}

/** A table with a caption-less header row; `rows` are arrays of cells (or `{num: value}`). */
function table(label, header, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  const cell = (tag, value) =>
    value && typeof value === "object" && "num" in value
      ? h(tag, { class: "num" }, value.num)
      : h(tag, {}, value);
  return h(
    "div",
    { class: "scroll", role: "region", "aria-label": label, tabindex: 0 },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, header.map((name) => cell("th", name)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, row.map((value) => cell("td", value))))),
    ),
  );
}

/** Replaces the children of `el`. */
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null));
}

/** A line chart of `points` ({x, y}) as inline SVG, with its highest value marked. */
function chart(points, className, unit) {
  const width = 600;
  const height = 140;
  const pad = 24;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", `chart ${className}`);
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...points.map((p) => p.y));
  const last = points.length ? points[points.length - 1].y : 0;
  svg.setAttribute("aria-label", `latest ${Math.round(last * 10) / 10} ${unit}, highest ${Math.round(max * 10) / 10}`);
  const ns = (tag, attrs) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  };
  svg.append(ns("line", { x1: pad, y1: height - pad, x2: width, y2: height - pad }));
  const label = ns("text", { x: 2, y: 12 });
  label.textContent = `${Math.round(max * 10) / 10} ${unit}`;
  svg.append(label);
  if (points.length > 1) {
    const x0 = points[0].x;
    const span = Math.max(1, points[points.length - 1].x - x0);
    const coords = points.map((p) => {
      const x = pad + ((p.x - x0) / span) * (width - pad);
      const y = height - pad - (p.y / max) * (height - 2 * pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svg.append(ns("polyline", { points: coords.join(" ") }));
  }
  return svg;
}

// ---- pages ---------------------------------------------------------------------------------
// Each page draws its frame once (`draw`) and returns a `refresh` that redraws its data;
// refreshing never touches what the user is typing.

const pages = {
  "": overview,
  queues,
  jobs,
  job,
  workers,
  locks,
  task,
  masters,
  claims,
};

async function overview() {
  const cards = h("div", { class: "cards" });
  const charts = h("div", { class: "charts" });
  const depths = h("div");
  const leaders = h("div");
  fill(main, h("h1", {}, "Overview"), cards, h("h2", {}, "Last hour"), charts,
    h("h2", {}, "Queue depths"), depths, h("h2", {}, "Masters"), leaders);
  return async () => {
    const [queueList, workerList, masterList, lockList, stats] = await Promise.all([
      api("/api/v1/queues?limit=100"),
      api("/api/v1/workers"),
      api("/api/v1/masters"),
      api("/api/v1/locks"),
      api("/api/v1/stats"),
    ]);
    const total = (key) => queueList.queues.reduce((sum, q) => sum + q.counts[key], 0);
    const held = lockList.filter((l) => !l.name.startsWith("~"));
    const leading = masterList.filter((m) => m.holder);
    fill(cards, [
      ["Pending jobs", total("pending")],
      ["Running jobs", total("running")],
      ["Failed jobs", total("failed")],
      ["Live workers", workerList.broker ? workerList.workers.length : "no broker"],
      ["Masters leading", `${leading.length} of ${masterList.length}`],
      ["Locks held", held.length],
    ].map(([name, value]) => h("div", { class: "card" }, h("p", {}, name), h("strong", {}, value))));
    const rates = [];
    const failures = [];
    for (let i = 1; i < stats.samples.length; i++) {
      const [a, b] = [stats.samples[i - 1], stats.samples[i]];
      const done = Math.max(0, b.succeeded - a.succeeded);
      const failed = Math.max(0, b.failed - a.failed);
      const minutes = Math.max(1, b.at - a.at) / 60000;
      rates.push({ x: b.at, y: (done + failed) / minutes });
      failures.push({ x: b.at, y: done + failed ? (100 * failed) / (done + failed) : 0 });
    }
    fill(charts,
      h("figure", {}, h("figcaption", {}, "Jobs finished per minute"), chart(rates, "throughput", "jobs/min")),
      h("figure", {}, h("figcaption", {}, "Failure rate, % of finished jobs"), chart(failures, "failures", "%")),
    );
    if (stats.samples.length < 2) charts.append(h("p", { class: "note" }, `Sampled every ${stats.interval_seconds}s; the charts fill in as the server runs.`));
    fill(depths, table("Queue depths", ["Queue", { num: "Pending" }, { num: "Running" }, { num: "Failed" }, "Paused"],
      queueList.queues.map((q) => [
        h("a", { href: `#/jobs?queue=${encodeURIComponent(q.queue)}` }, q.queue),
        { num: q.counts.pending }, { num: q.counts.running }, { num: q.counts.failed },
        q.paused ? "paused" : "",
      ]), "No queue holds a job yet."));
    fill(leaders, table("Masters", ["Master", "Leader", "Since", "Disabled"],
      masterList.map((m) => [h("a", { href: "#/masters" }, m.lockName), m.holder || "—", m.since || "—",
        m.disabled ? m.disabledReason || "yes" : "no"]), "No master leads or is disabled."));
  };
}

async function queues(params) {
  const after = params.get("after");
  const list = h("div");
  const more = h("p");
  fill(main, h("h1", {}, "Queues"), list, more);
  return async () => {
    const query = new URLSearchParams({ limit: "100" });
    if (after) query.set("after", after);
    const page = await api(`/api/v1/queues?${query}`);
    fill(list, table("Queues", ["Queue", ...STATES.map((s) => ({ num: s })), "", ""],
      page.queues.map((q) => [
        h("a", { href: `#/jobs?queue=${encodeURIComponent(q.queue)}` }, q.queue),
        ...STATES.map((s) => ({ num: q.counts[s] })),
        q.paused ? "paused" : "running",
        h("button", {
          type: "button",
          "aria-label": `${q.paused ? "Resume" : "Pause"} queue ${q.queue}`,
          onclick: (event) => act(event, `/api/v1/queues/${encodeURIComponent(q.queue)}/${q.paused ? "resume" : "pause"}`),
        }, q.paused ? "Resume" : "Pause"),
      ]), "No queue holds a job yet."));
    fill(more, page.next ? h("a", { href: `#/queues?after=${encodeURIComponent(page.next)}` }, "Next queues") : null);
  };
}

async function jobs(params) {
  const queue = params.get("queue") || "";
  const chosen = params.get("state") || "";
  const before = params.get("before");
  const filter = h("form", { class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const query = new URLSearchParams();
    for (const key of ["queue", "state"]) if (form.get(key)) query.set(key, form.get(key));
    location.hash = `#/jobs?${query}`;
  } },
  h("label", {}, "Queue", h("input", { name: "queue", value: queue, placeholder: "every queue" })),
  h("label", {}, "State", h("select", { name: "state" },
    h("option", { value: "" }, "any"),
    STATES.map((s) => h("option", { value: s, selected: s === chosen }, s)))),
  h("button", { type: "submit" }, "Filter"));
  const search = h("form", { class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const id = new FormData(event.target).get("id").trim();
    if (id) location.hash = `#/job/${encodeURIComponent(id)}`;
  } },
  h("label", {}, "Job id", h("input", { name: "id", inputmode: "numeric", required: true })),
  h("button", { type: "submit" }, "Open"));
  const list = h("div");
  const more = h("p");
  fill(main, h("h1", {}, "Jobs"), filter, search, list, more);
  return async () => {
    const query = new URLSearchParams({ limit: "50" });
    if (queue) query.set("queue", queue);
    if (chosen) query.set("state", chosen);
    if (before) query.set("before", before);
    const page = await api(`/api/v1/jobs?${query}`);
    fill(list, table("Jobs", [{ num: "Id" }, "Queue", "State", { num: "Attempts" }, "Created", "Run at"],
      page.jobs.map((j) => [
        { num: h("a", { href: `#/job/${j.id}` }, j.id) }, j.queue, state(j.state),
        { num: `${j.attempts}/${j.retry.max_attempts}` }, time(j.created_at), time(j.run_at),
      ]), "No job matches."));
    if (page.next) {
      query.delete("limit");
      query.set("before", page.next);
      fill(more, h("a", { href: `#/jobs?${query}` }, "Older jobs"));
    } else fill(more);
  };
}

async function job(params, id) {
  const body = h("div");
  const actions = h("div", { class: "actions" });
  fill(main, h("h1", {}, `Job ${id}`), actions, body);
  return async () => {
    let j;
    try {
      j = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status === 404 || error.status === 400) {
        fill(body, h("p", { class: "error" }, error.message));
        fill(actions);
        return;
      }
      throw error;
    }
    const finished = ["succeeded", "failed", "canceled"].includes(j.state);
    fill(actions,
      h("button", { type: "button", class: "danger", disabled: finished,
        onclick: (event) => act(event, `/api/v1/jobs/${j.id}/cancel`) }, "Cancel"),
      h("button", { type: "button", disabled: !(j.state === "failed" || j.state === "canceled"),
        onclick: (event) => act(event, `/api/v1/jobs/${j.id}/retry`) }, "Retry"));
    const fields = [
      ["State", state(j.state)],
      ["Queue", h("a", { href: `#/jobs?queue=${encodeURIComponent(j.queue)}` }, j.queue)],
      ["Priority", j.priority],
      ["Attempts", `${j.attempts} of ${j.retry.max_attempts}`],
      ["Created", time(j.created_at)],
      ["Run at", time(j.run_at)],
      ["Finished", time(j.finished_at)],
      j.lease && ["Held by", `${j.lease.owner} (token ${j.lease.token}) until ${time(j.lease.expires_at)}`],
      j.trace_parent && ["Trace", j.trace_parent],
    ].filter(Boolean);
    fill(body,
      h("dl", { class: "fields", "aria-label": "Job fields" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h2", {}, "Payload"), h("pre", {}, JSON.stringify(j.payload, null, 2)),
      j.result !== null && j.result !== undefined ? [h("h2", {}, "Result"), h("pre", {}, JSON.stringify(j.result, null, 2))] : null,
      j.error ? [h("h2", {}, "Error"), h("pre", { class: "error" }, j.error)] : null,
      h("h2", {}, "Attempts"),
      table("Attempts", [{ num: "#" }, "Owner", "Started", "Finished", "Outcome", "Error"],
        j.history.map((a) => [{ num: a.number }, a.owner, time(a.started_at), time(a.finished_at),
          a.outcome || "", a.error || ""]), "No attempt yet."));
  };
}

async function workers() {
  const list = h("div");
  fill(main, h("h1", {}, "Workers"), list);
  return async () => {
    const answer = await api("/api/v1/workers");
    if (!answer.broker) {
      fill(list, h("p", { class: "empty" }, "This server runs no broker ([broker] enabled = true runs one), so no worker connects to it."));
      return;
    }
    fill(list, table("Workers", ["Name", "Queue", "State", "Job", "Connected", "Last heard from"],
      answer.workers.map((w) => [w.name || w.peer, w.queue, w.state,
        w.job ? h("a", { href: `#/job/${w.job}` }, w.job) : "—", time(w.connected), ago(w.last_seen)]),
      "No worker is connected."));
  };
}

async function locks() {
  const held = h("div");
  const waiting = h("div");
  const tasks = h("div");
  fill(main, h("h1", {}, "Locks and tasks"), h("h2", {}, "Held"), held, h("h2", {}, "Waiting"), waiting,
    h("h2", {}, "Tasks on this server's host"), tasks);
  return async () => {
    const [all, recorded] = await Promise.all([api("/api/v1/locks"), api("/api/v1/tasks")]);
    fill(tasks, table("Tasks", [{ num: "Task" }, "State", "Command", "Locks", "Reason", "Created"],
      recorded.slice().reverse().map((t) => [
        { num: h("a", { href: `#/task/${t.id}` }, t.id) },
        t.orphaned ? "orphaned" : t.state, t.command.join(" "), t.locks.join(", "), t.reason,
        time(t.created_at),
      ]), "No task is recorded in this host's task directory ([tasks] dir)."));
    // The server reads each task waiter's place in a lock's line out of its entry (`waiting`).
    const entries = [];
    const holders = [];
    for (const lock of all) {
      if (lock.waiting) {
        entries.push({ ...lock.waiting, owner: lock.lease.owner, since: lock.since });
      } else if (!lock.internal) holders.push(lock);
    }
    fill(held, table("Held locks", ["Lock", "Holder", { num: "Token" }, "Reason", "Since", "Expires"],
      holders.map((l) => [l.name, l.lease.owner, { num: l.lease.token }, l.reason, time(l.since), time(l.lease.expires_at)]),
      "No lock is held."));
    entries.sort((a, b) => a.lock.localeCompare(b.lock) || a.ticket - b.ticket);
    fill(waiting, table("Waiting tasks", ["Lock", { num: "Ticket" }, "Waiter", "Reason", "Since"],
      entries.map((e) => [e.lock, { num: e.ticket }, e.owner, e.reason, time(e.since)]),
      "No task waits for a lock. (Task logs stay on the host that runs them: baton task show ID.)"));
  };
}

async function task(params, id) {
  const body = h("div");
  const log = h("pre", { "aria-label": "Task log" });
  fill(main, h("h1", {}, `Task ${id}`), body, h("h2", {}, "Log (its end)"), log);
  return async () => {
    const [recorded, text] = await Promise.all([
      api("/api/v1/tasks"),
      api(`/api/v1/tasks/${encodeURIComponent(id)}/log`, { text: true }),
    ]);
    const t = recorded.find((r) => String(r.id) === id);
    if (!t) {
      fill(body, h("p", { class: "error" }, `No task ${id} is recorded on this server's host.`));
      return;
    }
    const fields = [
      ["State", t.orphaned ? `${t.state} (orphaned: its runner is gone)` : t.state],
      ["Command", t.command.join(" ")],
      ["Locks", t.locks.join(", ")],
      ["Reason", t.reason],
      t.waiting_for && ["Waiting for", t.waiting_for],
      ["Process", t.pid ?? "—"],
      ["Exit", t.exit_code ?? (t.signal ? `signal ${t.signal}` : "—")],
      t.error && ["Error", t.error],
      ["Created", time(t.created_at)],
      ["Started", time(t.started_at)],
      ["Ended", time(t.ended_at)],
    ].filter(Boolean);
    fill(body, h("dl", { class: "fields" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
    log.textContent = text || "(empty)";
  };
}

async function masters() {
  const list = h("div");
  fill(main, h("h1", {}, "Masters"), list);
  return async () => {
    const all = await api("/api/v1/masters");
    fill(list, table("Masters", ["Master", "Leader", "Since", { num: "Token" }, "Leader alive", "Disabled", ""],
      all.map((m) => [
        m.lockName, m.holder || "—", m.since || "—", { num: m.token ?? "—" },
        m.holderAlive === null || m.holderAlive === undefined ? "—" : m.holderAlive ? "yes" : "no",
        m.disabled ? `by ${m.disabledBy || "?"}: ${m.disabledReason || ""}` : "no",
        m.disabled
          ? h("button", { type: "button", "aria-label": `Enable master ${m.lockName}`,
            onclick: (event) => act(event, `/api/v1/masters/${encodeURIComponent(m.lockName)}/enable`) }, "Enable")
          : h("form", { class: "inline", onsubmit: (event) => {
            event.preventDefault();
            const reason = new FormData(event.target).get("reason");
            act(event, `/api/v1/masters/${encodeURIComponent(m.lockName)}/disable`, { reason });
          } },
          h("label", {}, "Reason", h("input", { name: "reason", required: true, "aria-label": `Reason to disable ${m.lockName}` })),
          h("button", { type: "submit", class: "danger" }, "Disable")),
      ]), "No master leads or is disabled."));
  };
}

async function claims() {
  const list = h("div");
  fill(main, h("h1", {}, "Claims"), list);
  return async () => {
    const pools = await api("/api/v1/pools");
    if (pools.length === 0) {
      fill(list, h("p", { class: "empty" }, "No claim pool is looked after yet ([sync] pools)."));
      return;
    }
    fill(list, pools.map((p) => h("section", { "aria-label": `Pool ${p.status.pool}` },
      h("h2", {}, `Pool ${p.status.pool}: ${p.status.accounts} accounts, ${p.status.unclaimed} unclaimed`),
      table(`Owners of ${p.status.pool}`, ["Owner", { num: "Accounts" }, "Alive", "Last heartbeat"],
        p.status.identities.map((i) => [i.identity, { num: i.accounts }, i.alive ? "yes" : "no", ago(i.last_heartbeat)]),
        "No sync process is registered."),
      h("h2", {}, "Rebalance history"),
      table(`Rebalance history of ${p.status.pool}`, ["When", "Changes"],
        p.history.slice().reverse().map((c) => [time(c.at),
          c.owners.map((o) => `${o.owner}: ${o.before} → ${o.after}`).join(", ")]),
        "No change seen since this server started."))));
  };
}

// ---- actions, login, routing ---------------------------------------------------------------

/** POSTs to `path` from a button or form, then refreshes the page at once. */
async function act(event, path, body) {
  const control = event.currentTarget || event.target;
  if (control.disabled !== undefined) control.disabled = true;
  try {
    await api(path, { method: "POST", body });
    live.textContent = "Done.";
  } catch (error) {
    live.textContent = `Failed: ${error.message}`;
    if (error.status === 401 || (error.status === 403 && token())) return login(error);
  }
  await tick();
}

function login(error) {
  stop();
  sessionStorage.removeItem(TOKEN_KEY);
  logout.hidden = true;
  const form = h("form", { class: "inline", onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, new FormData(event.target).get("token").trim());
    route();
  } },
  h("label", {}, "API token", h("input", { name: "token", type: "password", autocomplete: "current-password", required: true })),
  h("button", { type: "submit" }, "Log in"));
  fill(main, h("h1", {}, "Log in"),
    h("p", {}, error && error.status === 403 ? "That token was refused." : "This server needs its API token (api_token)."),
    form);
  form.querySelector("input").focus();
}

let refresh = null;
let timer = null;
let generation = 0;

function stop() {
  clearTimeout(timer);
  refresh = null;
}

async function tick() {
  clearTimeout(timer);
  if (!refresh) return;
  const mine = generation;
  try {
    await refresh();
    if (mine !== generation) return;
    live.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (mine !== generation) return;
    if (error.status === 401 || (error.status === 403 && token())) return login(error);
    live.textContent = `Cannot reach the server: ${error.message}`;
  }
  if (mine === generation) timer = setTimeout(tick, REFRESH_MS);
}

async function route() {
  stop();
  generation += 1;
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, id] = path.split("/");
  const page = pages[name] || overview;
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href").replace(/^#\/?/, "");
    const section = { job: "jobs", task: "locks" }[name] || name;
    const current = target === section;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  logout.hidden = !token();
  refresh = await page(new URLSearchParams(search || ""), id && decodeURIComponent(id));
  await tick();
}

logout.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  route();
});
window.addEventListener("hashchange", () => {
  route();
  main.focus();
});
route();
