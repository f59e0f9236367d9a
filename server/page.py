"""The collector's own page at ``/``: what the fleet says right now, for a lab with no Grafana yet.

The page holds no data, so serving it needs no token: its script asks the authenticated API (``/api/v1/devices``,
``/api/v1/results``) with the read token the user typed into its form, kept in sessionStorage (never in a URL or a
cookie, so nothing sends it unasked), and computes what it draws from those lists. A missing or refused token is
one message on the page. The charts follow the bench report's conventions (html/page.py): each ``section.chart``
has its table beside it and carries ``data-points``/``data-mark`` (set once drawn), d3 and Plot are inlined, and
nothing is fetched from anywhere but this collector.
"""

from __future__ import annotations

import html
from functools import lru_cache

from edgebench.agent.engine.html.page import STYLE, Chart, _section, libraries

TITLE = "edgebench fleet"
TOKEN_KEY = "edgebench-token"  # the sessionStorage key
P90 = ["p90 (ms)", "95% low (ms)", "95% high (ms)"]
SECTIONS = [  # empty here: the page's script fills data, points and rows from the API's answers
    Chart("devices", "devices", "devices", "dot", [], ["device", "state", "last seen (UTC)", "seen (s ago)",
                                                       "class", "temperature (°C)", "agent"], [],
          "every registered device: how long ago the collector last heard from it"),
    Chart("matrix", "p90 by model and board class", "matrix", "cell", [],
          ["model", "board class", *P90, "device", "runtime", "finished (UTC)", "job"], [],
          "the newest result of each model on each board class; the interval: the result's own (between its "
          "repeats, or of its runs)"),
    Chart("trend", "one model across releases", "trend", "dot", [],
          ["release", "device", "board class", *P90, "finished (UTC)", "job"], [],
          "every result of the model picked, by its release label, oldest first; the bars: each result's interval"),
]


@lru_cache(maxsize=1)
def render() -> str:
    """The whole page; the same bytes for every caller (no data, no token), so it is built once."""
    picker = '<label>model <select id="model-picker"></select></label>'
    form = ('<form id="token-form"><label>API token (read role) <input id="token" type="password" '
            'autocomplete="off" size="50"></label> <button type="submit">show</button> '
            '<button type="button" id="forget">forget the token</button></form>')
    sections = "".join(_section(chart) for chart in SECTIONS).replace('<section class="chart"',
                                                                      '<section class="chart" hidden')
    trend = f"<h2>{html.escape(SECTIONS[2].title)}</h2>"
    sections = sections.replace(trend, f"{trend}<p>{picker}</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>'
            f'<link rel="icon" href="data:,"><style>{STYLE}#message{{font-weight:bold}}</style></head>'
            f"<body><h1>{html.escape(TITLE)}</h1>{form}"
            f'<p id="message" role="status"></p>{sections}\n{libraries()}<script>{SCRIPT}</script></body></html>\n')


SCRIPT = """
"use strict";
const KEY = "@KEY@";
const message = text => { document.getElementById("message").textContent = text; };
const fmt = v => v == null || (typeof v === "number" && !isFinite(v)) ? "n/a"
  : typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(+v.toPrecision(4))) : String(v);
const utc = t => t == null ? null : new Date(t * 1000).toISOString().slice(0, 19).replace("T", " ");

class Refused extends Error {}

async function api(path, token) {
  const response = await fetch(path, {headers: {Authorization: `Bearer ${token}`}, cache: "no-store"});
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) throw new Refused(`${response.status}: ${body.error}`);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${body.error || ""}`);
  return body;
}

function p90(result) {
  const stats = (result.summary || {}).stats || {};
  const interval = (stats.interval || {}).p90_ms;
  if (interval && interval.estimate != null) return [interval.estimate, ...(interval.ci || [null, null])];
  return [stats.p90_ms ?? null, ...(stats.p90_ci_ms || [null, null])];
}

const model = r => ((r.summary || {}).model || {}).name || "?";
const boardClass = r => (r.labels || {}).class || "(no class)";

function temperature(device) {
  for (const source of [device.heartbeat, device.inventory]) {
    for (const [key, value] of Object.entries(source || {})) {
      if (/temp/i.test(key) && typeof value === "number") return value;
    }
  }
  return null;
}

function fill(id, rows) {
  document.getElementById(`${id}-table`).tBodies[0].replaceChildren(...rows.map(row => {
    const tr = document.createElement("tr");
    for (const value of row) tr.insertCell().textContent = fmt(value);
    return tr;
  }));
}

function draw(id, data, plot) {
  const section = document.getElementById(id);
  section.querySelector(".plot").replaceChildren(...(data.length ? [plot] : []));
  section.dataset.points = data.length;
  section.hidden = false;
}

function clear() {
  for (const section of document.querySelectorAll("section.chart")) {
    section.hidden = true;
    section.dataset.points = 0;
    section.querySelector(".plot").replaceChildren();
    section.querySelector("tbody").replaceChildren();
  }
}

function devices(list) {
  const now = Date.now() / 1000;
  const data = list.map(d => ({device: d.device_id, state: d.state, ago: Math.max(0, now - d.last_seen)}));
  draw("devices", data, data.length && Plot.plot({width: 1000, marginLeft: 160, height: 60 + 28 * data.length,
    color: {legend: true, domain: ["online", "offline"], range: ["#59a14f", "#e15759"], unknown: "#bbb"},
    x: {label: "seconds since last heard from", grid: true, zero: true}, y: {label: null},
    marks: [Plot.dot(data, {x: "ago", y: "device", fill: "state", r: 6, tip: true})]}));
  fill("devices", list.map(d => [d.device_id, d.state, utc(d.last_seen), Math.round(now - d.last_seen),
                                 (d.labels || {}).class, temperature(d), d.agent_version]));
}

function newest(results) {
  const cells = new Map();
  for (const r of results) {
    const key = JSON.stringify([model(r), boardClass(r)]);
    const held = cells.get(key);
    if (!held || r.finished >= held.finished) cells.set(key, r);
  }
  return [...cells.values()].filter(r => p90(r)[0] != null)
    .sort((a, b) => model(a).localeCompare(model(b)) || boardClass(a).localeCompare(boardClass(b)));
}

function matrix(results) {
  const kept = newest(results);
  const data = kept.map(r => ({model: model(r), board: boardClass(r), p90: p90(r)[0]}));
  draw("matrix", data, data.length && Plot.plot({width: 1000, marginLeft: 220, marginBottom: 40,
    height: 80 + 40 * new Set(data.map(d => d.model)).size, padding: 0.05,
    color: {legend: true, type: "log", scheme: "YlOrRd", label: "p90 (ms)"},
    x: {label: "board class"}, y: {label: null},
    marks: [Plot.cell(data, {x: "board", y: "model", fill: "p90", tip: true}),
            Plot.text(data, {x: "board", y: "model", text: d => fmt(d.p90)})]}));
  fill("matrix", kept.map(r => [model(r), boardClass(r), ...p90(r), r.device_id,
                                ((r.summary || {}).runtime || {}).runtime, utc(r.finished), r.job_id]));
}

function trend(results, name) {
  const mine = results.filter(r => model(r) === name && p90(r)[0] != null)
    .sort((a, b) => a.finished - b.finished);
  const release = r => (r.labels || {}).release || "(no release)";
  const data = mine.map(r => {
    const [x, low, high] = p90(r);
    return {release: release(r), board: boardClass(r), p90: x, low, high};
  });
  const order = [...new Set(data.map(d => d.release))];
  draw("trend", data, data.length && Plot.plot({width: 1000, marginTop: 24, marginLeft: 70,
    color: {legend: true}, x: {label: "release", domain: order},
    y: {label: "p90 (ms)", grid: true, zero: true, nice: true},
    marks: [Plot.ruleX(data.filter(d => d.low != null && d.high != null),
                       {x: "release", y1: "low", y2: "high", stroke: "board", strokeWidth: 2}),
            Plot.dot(data, {x: "release", y: "p90", fill: "board", r: 5, tip: true})]}));
  fill("trend", mine.map(r => [release(r), r.device_id, boardClass(r), ...p90(r), utc(r.finished), r.job_id]));
}

function picker(results) {
  const select = document.getElementById("model-picker");
  const names = [...new Set(results.map(model))].sort();
  const chosen = names.includes(select.value) ? select.value : names[0];
  select.replaceChildren(...names.map(name => new Option(name, name, false, name === chosen)));
  select.onchange = () => trend(results, select.value);
  return chosen;
}

async function show() {
  const token = sessionStorage.getItem(KEY);
  document.body.dataset.state = "loading";
  clear();
  if (!token) {
    message("This page shows the fleet's data through the collector's API: type a token with the read role " +
            "(edgebench server token create NAME --role read) above.");
    document.body.dataset.state = "needs-token";
    return;
  }
  message("loading...");
  try {
    const [listed, found] = await Promise.all([api("/api/v1/devices", token), api("/api/v1/results", token)]);
    devices(listed.devices);
    matrix(found.results);
    const name = picker(found.results);
    trend(found.results, name);
    const now = utc(Date.now() / 1000);
    message(`${listed.devices.length} devices, ${found.results.length} results, as of ${now} UTC`);
    document.body.dataset.state = "ready";
  } catch (error) {
    const refused = error instanceof Refused;
    message(refused ? `The collector refused the token (${error.message}): type a token with the read role.`
                    : `The collector did not answer: ${error.message}`);
    document.body.dataset.state = refused ? "refused" : "error";
  }
}

document.getElementById("token-form").addEventListener("submit", event => {
  event.preventDefault();
  const field = document.getElementById("token");
  sessionStorage.setItem(KEY, field.value.trim());
  field.value = "";
  show();
});
document.getElementById("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); show(); });
show();
""".replace("@KEY@", TOKEN_KEY)
