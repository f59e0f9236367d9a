"""`edgebench report R.json --html` and `bench --html`: one self-contained page, opened offline in a real browser
(Debian's chromium through its chromedriver, scripts/ensure_services.sh), every chart's drawn marks counted against
the points the page gave it, and its tables checked against the report."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import RUN_LENGTH

SCREENSHOT_COPY = Path("/tmp/probe18/report_screenshot.png")  # for the note; best effort
# What each chart's data-mark counts: Plot puts each mark type's elements in a group named by aria-label.
COUNT_MARKS = """
const chart = document.getElementById(arguments[0]);
const mark = chart.dataset.mark;
if (mark === "line") return [...chart.querySelectorAll('g[aria-label="line"] path')]
    .reduce((n, p) => n + (p.getAttribute("d").match(/[ML]/g) || []).length, 0);
const selector = {rect: 'g[aria-label="rect"] rect', bar: 'g[aria-label="bar"] rect',
                  dot: 'g[aria-label="dot"] circle'}[mark];
return chart.querySelectorAll(selector).length;
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One real run (2 repeats, per-op profile) through the CLI: its JSON, its `bench --html` page, and the page
    `report` makes from the JSON."""
    import numpy as np

    from tests.conftest import linear_model, run_cli, save_onnx

    folder = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(0)
    model = save_onnx(linear_model(rng.normal(size=(8, 4)), rng.normal(size=4)), folder / "linear.onnx")
    result = run_cli("bench", model, *RUN_LENGTH, "--repeats", "2", "--profile-ops", "--no-sensors",
                     "--json", folder / "r.json", "--html", folder / "bench.html", "--quiet")
    assert result.code == 0, result
    made = run_cli("report", folder / "r.json", "--html", folder / "report.html", "--csv", folder / "csv")
    assert made.code == 0 and made.out == "", made
    return folder


def headless_chromium():
    """Debian's chromium, headless, through selenium (the browser tests' one way to start it: this file's, the
    collector page's); skipped where it is not installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if not (shutil.which("chromium") and driver_path):
        pytest.skip("chromium and chromedriver are not installed (scripts/ensure_services.sh installs them)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager never runs, so nothing goes online.
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def screenshot(driver, path: Path) -> None:
    """The whole page, not just the window (Chrome DevTools: captureBeyondViewport)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def table_cells(driver, table_id: str) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
        ".map(r => [...r.cells].map(c => c.textContent));", table_id)


@pytest.mark.parametrize("page", ["report.html", "bench.html"])
def test_page_draws_every_point_offline(reports, browser, page, tmp_path):
    report = json.loads((reports / "r.json").read_text())
    browser.get((reports / page).as_uri())
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    charts = browser.execute_script(
        "return [...document.querySelectorAll('section.chart')].map(s => [s.id, +s.dataset.points]);")
    assert {name for name, _ in charts} >= {"latency-histogram", "latency-cdf", "latency-timeline", "memory",
                                             "ops-by-type"}
    for name, points in charts:
        drawn = browser.execute_script(COUNT_MARKS, name)
        assert points > 0 and drawn == points, (name, drawn, points)
    for name in ("latency-histogram", "latency-cdf"):  # p50, p90, p99
        assert browser.execute_script(f"return document.querySelectorAll('#{name} g[aria-label=\"rule\"] line')"
                                      ".length") == 3
    unit_scale = 1000.0 if report["stats"]["p50_ms"] < 1 else 1.0
    rows = {row[0]: row[1:] for row in table_cells(browser, "latency-cdf-table")}
    for p in ("p50", "p90", "p99"):
        pooled, *per_repeat = (float(cell) for cell in rows[p])
        assert pooled == pytest.approx(report["stats"][f"{p}_ms"] * unit_scale, rel=1e-3)
        assert per_repeat == pytest.approx([r["stats"][f"{p}_ms"] * unit_scale for r in report["repeats"]],
                                           rel=1e-3)
    ops = table_cells(browser, "ops-by-type-table")
    assert [row[0] for row in ops] == [entry["op"] for entry in report["ops"]["by_type"]]
    histogram = table_cells(browser, "latency-histogram-table")
    assert sum(int(c) for row in histogram for c in row[2:]) <= report["stats"]["count"]
    screenshot(browser, tmp_path / f"{page}.png")
    assert (tmp_path / f"{page}.png").stat().st_size > 10_000
    if page == "report.html":
        try:
            SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / f"{page}.png", SCREENSHOT_COPY)
        except OSError:
            pass


def test_page_fetches_nothing(reports):
    text = (reports / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", text, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", text, re.I)
    assert len(text) > 400_000  # d3 and Plot are inlined


def test_csv_holds_the_tables(reports):
    report = json.loads((reports / "r.json").read_text())
    files = {path.stem: list(csv.reader(path.open())) for path in (reports / "csv").glob("*.csv")}
    assert set(files) >= {"latency-histogram", "latency-cdf", "latency-timeline", "memory", "ops-by-type"}
    cdf = {row[0]: float(row[1]) for row in files["latency-cdf"][1:]}
    scale = 1000.0 if report["stats"]["p50_ms"] < 1 else 1.0
    assert cdf["p99"] == pytest.approx(report["stats"]["p99_ms"] * scale, rel=1e-9)
    assert len(files["memory"]) - 1 == len(report["memory"]["rss_samples"])
    histogram_runs = sum(int(c) for row in files["latency-histogram"][1:] for c in row[2:])
    assert 0 < histogram_runs <= report["stats"]["count"]


def test_physics_series_and_generation_get_their_panels(reports):
    """Sensor readings (none on this machine: added to the report) each get a panel; a language model's report
    labels its latency inter-token and gets the TTFT/prefill/decode table."""
    from edgebench.agent.engine.html import page

    report = json.loads((reports / "r.json").read_text())
    report["physics"] = {"samples": [[i * 100_000_000, {"soc_temp": 40.0 + i, "cpu0_clock": 1.5e9}] for i in range(5)],
                         "window": {"soc_temp": {"kind": "temperature", "unit": "°C"}}}
    report["generation"] = {"ttft_ms": {"estimate": 12.5, "unit": "ms", "ci": [11.0, 14.0]},
                            "prefill_tok_s": {"estimate": 300.0, "unit": "tok/s", "ci": None},
                            "decode_tok_s": {"estimate": 40.0, "unit": "tok/s", "ci": None}}
    found = {chart.id: chart for chart in page.charts(report)}
    assert [found[f"physics-{n}"].points for n in range(2)] == [5, 5]
    assert found["latency-histogram"].title.startswith("inter-token latency")
    text = page.render(report)
    assert 'id="generation-table"' in text and "12.5" in text and "temperature (°C)" in text


@pytest.mark.parametrize(("content", "says"), [
    ('{"schema": "edgebench.variants/1"}', "not an edgebench bench report"),
    ("[1, 2]", "not an edgebench bench report"),
    ("not json", "not JSON"),
])
def test_not_a_bench_report_is_one_line(cli, tmp_path, content, says):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = cli("report", bad, "--html", tmp_path / "out.html")
    assert result.code == 2 and says in result.err and len(result.err.splitlines()) == 1, result
    assert "Traceback" not in result.err and not (tmp_path / "out.html").exists()


def test_a_recorded_boards_run_marks_where_throttling_began(cli, models, browser, tmp_path):
    """A run on the recorded Jetson Orin Nano tree whose CPU zone crosses its passive trip point (99 °C) inside
    measured run 150 (tests/test_physics.py: the event placed at a run, not at a time): every sensor reading is
    drawn point for point, and the latency and sensor charts mark the onset the report gives."""
    from tests.test_physics import AT_RUN, BOARDS, CLS, ZONE0, at_measured_run

    root = tmp_path / "jetson"
    shutil.copytree(BOARDS / "jetson-orin-nano", root)
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, *AT_RUN, "--sensors-root", root, "--idle-baseline", "0",
                 "--repeats", "1", "--json", tmp_path / "r.json", "--html", tmp_path / "r.html", "--quiet",
                 env=at_measured_run(150, root / ZONE0, "101500\n"))
    assert result.code == 0, result
    report = json.loads((tmp_path / "r.json").read_text())
    throttling = report["physics"]["throttling"]
    assert throttling["detected"]
    onsets = sorted({event["onset_s"] for event in throttling["events"]})
    browser.get((tmp_path / "r.html").as_uri())
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    charts = dict(browser.execute_script(
        "return [...document.querySelectorAll('section.chart')].map(s => [s.id, +s.dataset.points]);"))
    readings = [name for name in charts if name.startswith("physics-")]
    assert readings  # temperatures, clocks and power rails of the board tree
    for name in readings + ["latency-timeline"]:
        drawn = browser.execute_script(COUNT_MARKS, name)
        assert charts[name] > 0 and drawn == charts[name], (name, drawn, charts[name])
        marked = browser.execute_script(
            "return [...document.querySelectorAll(`#${arguments[0]} g[aria-label=\"text\"] text`)]"
            ".map(t => t.textContent);", name)
        assert marked.count("throttling: over_passive_trip") == len(onsets), (name, marked)
        assert browser.execute_script(f"return document.querySelectorAll('#{name} g[aria-label=\"rule\"] line')"
                                      ".length") == len(onsets)
    screenshot(browser, tmp_path / "board.png")
