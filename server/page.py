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
    Chart("variants", "variants: latency against size and drift", "variants", "dot", [],
          ["model", "device", "board class", "size (bytes)", *P90, "cosine vs reference", "top-1 agreement",
           "max abs err", "drift error", "job"], [],
          "the results of the push picked (push --reference; the newest with drift first): p90 against the model's "
          "size, coloured by the cosine of its outputs against the reference's (grey: drift not measured)"),
    Chart("gates", "gate history", "gates", "dot", [],
          ["recorded (UTC)", "rule", "model", "board class", "config", "status", "value", "message"], [],
          "the recorded gate verdicts (edgebench gate --server URL records them; /api/v1/gates/verdicts), newest "
          "first in the table: one mark per rule x model x board class at each evaluation"),
]
PICKERS = {"trend": ("model", "model-picker"), "variants": ("push", "batch-picker")}  # section id -> its <select>
VERDICTS = 500  # the newest this many verdicts make the gate history


@lru_cache(maxsize=1)
def render() -> str:
    """The whole page; the same bytes for every caller (no data, no token), so it is built once."""
    form = ('<form id="token-form"><label>API token (read role) <input id="token" type="password" '
            'autocomplete="off" size="50"></label> <button type="submit">show</button> '
            '<button type="button" id="forget">forget the token</button></form>')
    sections = "".join(_section(chart) for chart in SECTIONS).replace('<section class="chart"',
                                                                      '<section class="chart" hidden')
    for chart in SECTIONS:
        if chart.id in PICKERS:
            label, select = PICKERS[chart.id]
            heading = f"<h2>{html.escape(chart.title)}</h2>"
            sections = sections.replace(heading, f'{heading}<p><label>{label} <select id="{select}"></select>'
                                                 '</label></p>')
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

function temperature(device) {  // the board's hottest reading, sent with each heartbeat (temp_max_c)
  const value = (device.heartbeat || {}).temp_max_c;
  return typeof value === "number" ? value : null;
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

function picker(id, choices, redraw) {
  // choices: [value, text] pairs; the one picked before stays picked while it is still there
  const select = document.getElementById(id);
  const values = choices.map(([value]) => value);
  const chosen = values.includes(select.value) ? select.value : values[0];
  select.replaceChildren(...choices.map(([value, text]) => new Option(text, value, false, value === chosen)));
  select.onchange = () => redraw(select.value);
  return chosen;
}

const models = results => [...new Set(results.map(model))].sort().map(name => [name, name]);
const size = r => ((r.summary || {}).model || {}).size_bytes ?? null;

function batches(results) {
  // the pushes with a reference (their results carry drift), the newest first
  const newest = new Map();
  for (const r of results.filter(r => r.drift)) {
    newest.set(r.batch_id, Math.max(newest.get(r.batch_id) ?? 0, r.finished));
  }
  return [...newest].sort((a, b) => b[1] - a[1]).map(([batch, t]) => [batch, `${batch} (${utc(t)} UTC)`]);
}

function variants(results, batch) {
  const mine = results.filter(r => r.batch_id === batch && r.drift && p90(r)[0] != null && size(r) != null)
    .sort((a, b) => model(a).localeCompare(model(b)) || a.device_id.localeCompare(b.device_id));
  const data = mine.map(r => ({model: model(r), device: r.device_id, size: size(r), p90: p90(r)[0],
                               cosine: r.drift.cosine_mean ?? null}));
  const measured = data.filter(d => d.cosine != null);
  draw("variants", data, data.length && Plot.plot({width: 1000, marginLeft: 70, marginRight: 160,
    color: {legend: true, scheme: "Viridis", label: "cosine vs reference",
            domain: [Math.min(...measured.map(d => d.cosine), 0.9), Math.max(...measured.map(d => d.cosine), 1)]},
    x: {label: "model size (bytes)", grid: true, zero: true, nice: true, tickFormat: "~s"},
    y: {label: "p90 (ms)", grid: true, zero: true},
    marks: [Plot.dot(measured, {x: "size", y: "p90", fill: "cosine", r: 6, stroke: "black", tip: true}),
            Plot.dot(data.filter(d => d.cosine == null), {x: "size", y: "p90", fill: "#bbb", r: 6, tip: true}),
            Plot.text(data, {x: "size", y: "p90", text: "model", dx: 10, textAnchor: "start"})]}));
  fill("variants", mine.map(r => [model(r), r.device_id, boardClass(r), size(r), ...p90(r), r.drift.cosine_mean,
                                  r.drift.top1_agreement, r.drift.max_abs_err, r.drift.error, r.job_id]));
}

const STATUS = {domain: ["pass", "fail", "inconclusive", "missing"],
                range: ["#59a14f", "#e15759", "#f28e2b", "#9c9c9c"]};

function gates(verdicts) {
  const data = verdicts.map(v => ({when: new Date(v.recorded * 1000), status: v.status, value: v.value,
                                   row: `${v.rule} · ${v.model} · ${v.board_class}`}));
  const rows = new Set(data.map(d => d.row)).size;
  draw("gates", data, data.length && Plot.plot({width: 1000, marginLeft: 320, height: 80 + 30 * rows,
    color: {legend: true, ...STATUS}, x: {label: "recorded (UTC)", type: "utc", grid: true}, y: {label: null},
    marks: [Plot.dot(data, {x: "when", y: "row", fill: "status", r: 6, tip: true})]}));
  fill("gates", verdicts.map(v => [utc(v.recorded), v.rule, v.model, v.board_class, v.config, v.status, v.value,
                                   v.message]));
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
    const [listed, found, judged] = await Promise.all([api("/api/v1/devices", token),
      api("/api/v1/results", token), api("/api/v1/gates/verdicts?limit=@VERDICTS@", token)]);
    const results = found.results;
    devices(listed.devices);
    matrix(results);
    trend(results, picker("model-picker", models(results), name => trend(results, name)));
    variants(results, picker("batch-picker", batches(results), batch => variants(results, batch)));
    gates(judged.verdicts);
    const now = utc(Date.now() / 1000);
    message(`${listed.devices.length} devices, ${results.length} results, ${judged.verdicts.length} gate ` +
            `verdicts, as of ${now} UTC`);
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
""".replace("@KEY@", TOKEN_KEY).replace("@VERDICTS@", str(VERDICTS))
