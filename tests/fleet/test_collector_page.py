"""The collector's page at ``/`` (server/page.py), opened in a real browser against a real fleet: it holds no data,
asks the API with the token typed into it, says so when the token is missing or refused, and draws what the API's
JSON says (every chart's marks counted against its points, the tables against the results and the recorded gate
verdicts: a push with a reference gives the variants chart, gates evaluated with record=1 the gate history)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import urllib.request
from datetime import datetime, timezone

import pytest

from tests.test_html_report import headless_chromium, screenshot, table_cells
from tests.test_physics import BOARDS

from .conftest import FAST
from .services import wait_for

PROBE = "/tmp/probe18/collector_page_full.png"  # the screenshot; best effort
SETTINGS = {"min_runs": 50, "min_duration_s": 0.1, "warmup_runs": 2, "warmup_duration_s": 0.05}
# data-mark -> the elements Plot draws for it (tests/test_html_report.py's, with the heat map's cells)
COUNT = """
const chart = document.getElementById(arguments[0]);
const selector = {dot: 'g[aria-label="dot"] circle', cell: 'g[aria-label="cell"] rect'}[chart.dataset.mark];
return chart.querySelectorAll(selector).length;
"""

GATES = b"""
[[gate]]
name = "sine p90 budget"
model = "sine_*"
devices = "class=x86"
metric = "p90_ms"
max = 1000.0

[[gate]]
model = "no_such_model*"
metric = "p90_ms"
max = 10.0
"""


@pytest.fixture
def browser():
    """A fresh headless chromium per test (sessionStorage starts empty); skipped where it is not installed."""
    driver = headless_chromium()
    yield driver
    driver.quit()


def _push(fleet, sha: str, release: str) -> list[dict]:
    body = {"models": [sha], "devices": {"all": True}, "labels": {"release": release},
            "options": {"settings": SETTINGS, "sensors": False, "repeats": 2}}
    batch = fleet.post("/api/v1/jobs", json.dumps(body).encode())["batch_id"]
    jobs = fleet.wait_jobs(batch, timeout=120)
    assert all(job["state"] == "done" for job in jobs), jobs
    return jobs


def _push_variants(collector, tiny_onnx, cli, out) -> None:
    """The reference pushed among its variants (push --reference): every result carries its drift."""
    reference, _, _ = tiny_onnx(seed=3, name="linear_fp32.onnx")
    noisy, _, _ = tiny_onnx(seed=3, name="linear_noisy.onnx", noise=0.3)
    result = cli("push", reference, noisy, "--reference", reference, "--server", collector.url, "--token",
                 collector.token, "--devices", "page-board", "--shape", "x=1x8", "--no-sensors", *FAST, "--wait",
                 "--wait-timeout", "120", "--json", str(out), timeout=180)
    assert result.code == 0, result


def _record_gates(collector) -> dict:
    """The gates judged on the collector and recorded (as `edgebench gate --server URL` records them)."""
    return json.loads(collector.request("POST", "/api/gates/evaluate?record=1", GATES, "application/toml",
                                        timeout=60))


def _wait_state(driver, states: tuple[str, ...]) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.state") in states
        and d.execute_script("return document.body.dataset.state"))


def _type_token(driver, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def _drawn_nothing(driver) -> None:
    assert driver.execute_script("return document.querySelectorAll('section.chart svg, tbody tr').length") == 0


def _p90(result: dict) -> float:
    stats = result["summary"]["stats"]
    return ((stats.get("interval") or {}).get("p90_ms") or {}).get("estimate") or stats["p90_ms"]


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _number(cell: str, value) -> bool:
    """A table cell shows the value (4 significant digits), or n/a for none."""
    return cell == "n/a" if value is None else float(cell) == pytest.approx(value, rel=1e-3)


def test_the_page_holds_no_data_and_draws_the_apis(fleet, sine_model, tiny_onnx, cli, browser, tmp_path):
    collector = fleet.start_collector()
    board = tmp_path / "jetson"  # the agent reads the recorded Orin Nano tree's sensors: its heartbeat's temperature
    shutil.copytree(BOARDS / "jetson-orin-nano", board)
    fleet.start_agent("page-board", "class=x86", extra=("--sensors-root", str(board)))
    sha = fleet.upload(sine_model)["sha256"]
    for release in ("v1", "v2"):
        _push(fleet, sha, release)
        assert _record_gates(collector)["recorded"] == 2  # a pass (sine on x86) and a missing, each evaluation
    _push_variants(collector, tiny_onnx, cli, tmp_path / "variants.json")
    reader = fleet.post("/api/v1/tokens", json.dumps({"name": "page-reader", "role": "read"}).encode())["token"]
    wait_for(lambda: (collector.get("/api/v1/devices")["devices"][0].get("heartbeat") or {}).get("temp_max_c"), 30,
             "a heartbeat with the board's temperature")
    every = collector.get("/api/v1/results")["results"]
    results = [r for r in every if r["summary"]["model"]["name"] == "sine_float.tflite"]
    variants = sorted((r for r in every if r["drift"]), key=lambda r: r["summary"]["model"]["name"])
    verdicts = collector.get("/api/v1/gates/verdicts?limit=500")["verdicts"]
    assert len(results) == 2 and len(variants) == 2 and len(every) == 4
    assert [(v["rule"], v["status"]) for v in verdicts] == [("no_such_model* p90_ms", "missing"),
                                                            ("sine p90 budget", "pass")] * 2  # newest first

    with urllib.request.urlopen(collector.url + "/", timeout=30) as response:  # no token
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
        # the page's scripts may only call this collector: a token typed into it goes nowhere else
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        text = response.read().decode()
    assert sha not in text and "sine_float" not in text and "page-board" not in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)

    browser.get(collector.url + "/")
    assert _wait_state(browser, ("needs-token",)) == "needs-token"
    assert "token" in browser.find_element("id", "message").text
    _drawn_nothing(browser)
    _type_token(browser, "ebt_not-a-token")
    assert _wait_state(browser, ("refused",)) == "refused"
    assert "refused the token" in browser.find_element("id", "message").text and "401" in browser.find_element(
        "id", "message").text
    _drawn_nothing(browser)
    browser.get_log("browser")  # the 401 is logged by the browser: read (and so cleared) before the good token

    _type_token(browser, reader)
    assert _wait_state(browser, ("ready", "refused", "error")) == "ready", browser.find_element("id", "message").text
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    charts = dict(browser.execute_script(
        "return [...document.querySelectorAll('section.chart')].map(s => [s.id, +s.dataset.points]);"))
    assert charts == {"devices": 1, "matrix": 3, "trend": 1, "variants": 2, "gates": 4}  # trend: linear_fp32's
    _pick(browser, "model-picker", "sine_float.tflite")
    charts["trend"] = browser.execute_script("return +document.getElementById('trend').dataset.points")
    assert charts["trend"] == 2
    for name, points in charts.items():
        assert browser.execute_script(COUNT, name) == points > 0, name
    newest = max(results, key=lambda r: r["finished"])
    matrix = table_cells(browser, "matrix-table")
    assert [r[0] for r in matrix] == ["linear_fp32.onnx", "linear_noisy.onnx", "sine_float.tflite"]
    row = matrix[-1]
    assert row[:2] == ["sine_float.tflite", "x86"] and row[-1] == newest["job_id"]
    interval = newest["summary"]["stats"]["interval"]["p90_ms"]
    assert [float(v) for v in row[2:5]] == pytest.approx([_p90(newest), *interval["ci"]], rel=1e-3)
    trend = table_cells(browser, "trend-table")
    assert [r[0] for r in trend] == ["v1", "v2"]
    assert [float(r[3]) for r in trend] == pytest.approx(
        [_p90(r) for r in sorted(results, key=lambda r: r["finished"])], rel=1e-3)
    _check_variants(browser, variants)
    _check_gates(browser, verdicts)
    devices = table_cells(browser, "devices-table")
    assert [r[:2] for r in devices] == [["page-board", "online"]]
    hottest = max(int(zone.read_text()) for zone in board.glob("sys/class/thermal/thermal_zone*/temp")) / 1000
    assert _number(devices[0][5], hottest)  # the temperature column: the heartbeat's temp_max_c, 4 digits
    assert browser.execute_script("return sessionStorage.getItem('edgebench-token')") == reader
    assert reader not in browser.current_url and not browser.get_cookies()

    screenshot(browser, tmp_path / "collector_page.png")
    assert (tmp_path / "collector_page.png").stat().st_size > 10_000
    with contextlib.suppress(OSError):
        shutil.copyfile(tmp_path / "collector_page.png", PROBE)


def _pick(driver, select: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, select)).select_by_value(value)


def _check_variants(driver, variants: list[dict]) -> None:
    """One row per result of the push with a reference, as the API says it (the batch picked: the only one)."""
    (batch,) = {r["batch_id"] for r in variants}
    assert driver.execute_script("return document.getElementById('batch-picker').value") == batch
    rows = table_cells(driver, "variants-table")
    assert [(r[0], r[1], r[2], r[3], r[-1]) for r in rows] == [
        (r["summary"]["model"]["name"], "page-board", "x86", str(r["summary"]["model"]["size_bytes"]), r["job_id"])
        for r in variants]
    for row, result in zip(rows, variants):
        drift = result["drift"]
        assert _number(row[4], _p90(result)) and _number(row[7], drift["cosine_mean"]), row
        assert _number(row[8], drift.get("top1_agreement")) and _number(row[9], drift["max_abs_err"]), row
        assert row[10] == "n/a"  # no drift error
    assert _number(rows[0][7], 1.0)  # the reference against itself


def _check_gates(driver, verdicts: list[dict]) -> None:
    """The gate history's table is the API's verdicts, newest first."""
    rows = table_cells(driver, "gates-table")
    assert [r[:6] + r[7:] for r in rows] == [
        [_utc(v["recorded"]), v["rule"], v["model"], v["board_class"], v["config"], v["status"], v["message"]]
        for v in verdicts]
    assert all(_number(row[6], v["value"]) for row, v in zip(rows, verdicts))
    assert {v["status"] for v in verdicts} == {"pass", "missing"} and verdicts[0]["value"] is None
