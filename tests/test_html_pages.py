"""`report A.json B.json [C.json] --html`, `report VARIANTS.json --html`, `compare --html` and `variants --html`: the
pages for more than one report, opened in a real browser (as tests/test_html_report.py), every chart's drawn marks
counted against its points, the speed-ups checked against the engine's own (bench.speedup) and the tables against
the JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import RUN_LENGTH
from tests.test_html_report import COUNT_MARKS, browser, screenshot, table_cells  # noqa: F401 - the fixture

PROBE = Path("/tmp/probe18")  # the screenshots; best effort


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real small runs through the CLI: a model and its baseline interleaved (bench --baseline-model), a third
    report on its own, their page; a variants run (--json and --html) and a compare run with --repeats."""
    import numpy as np

    from tests.conftest import linear_model, run_cli, save_onnx

    folder = tmp_path_factory.mktemp("pages")
    rng = np.random.default_rng(1)
    small = save_onnx(linear_model(rng.normal(size=(64, 64)), rng.normal(size=64)), folder / "small.onnx")
    large = save_onnx(linear_model(rng.normal(size=(256, 256)), rng.normal(size=256)), folder / "large.onnx")
    steps = [
        ("bench", small, *RUN_LENGTH, "--repeats", "2", "--no-sensors", "--baseline-model", large,
         "--baseline-json", folder / "base.json", "--json", folder / "small.json", "--quiet"),
        ("bench", large, *RUN_LENGTH, "--repeats", "2", "--no-sensors", "--json", folder / "alone.json", "--quiet"),
        ("report", folder / "base.json", folder / "small.json", folder / "alone.json", "--html",
         folder / "compare.html", "--csv", folder / "csv"),
        ("variants", large, "--only", "fp16,dynamic-int8", "--repeats", "2", *RUN_LENGTH[:4], "--samples", "4",
         "--out-dir", folder / "v", "--json", folder / "variants.json", "--html", folder / "variants-direct.html",
         "--quiet"),
        ("report", folder / "variants.json", "--html", folder / "variants.html", "--csv", folder / "vcsv"),
        ("compare", large, folder / "v" / "large.fp16.onnx", "--samples", "4", "--repeats", "2", *RUN_LENGTH[:4],
         "--json", folder / "cmp.json", "--html", folder / "cmp.html"),
    ]
    for step in steps:
        result = run_cli(*step)
        assert result.code == 0, (step[0], result)
    return folder


def _load(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def _open_and_count(driver, path: Path) -> dict:
    """The page opened: no SEVERE console entry, every chart drew exactly its points; {chart id: points}."""
    driver.get(path.as_uri())
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    found = driver.execute_script(
        "return [...document.querySelectorAll('section.chart')].map(s => [s.id, +s.dataset.points]);")
    for name, points in found:
        drawn = driver.execute_script(COUNT_MARKS, name)
        assert points > 0 and drawn == points, (path.name, name, drawn, points)
    return dict(found)


def _probe(driver, name: str) -> None:
    try:
        PROBE.mkdir(parents=True, exist_ok=True)
        screenshot(driver, PROBE / name)
    except OSError:
        pass


def test_several_reports_side_by_side_with_speedups(runs, browser):  # noqa: F811 - the fixture
    from edgebench.agent.engine import bench

    charts = _open_and_count(browser, runs / "compare.html")
    assert set(charts) == {"latency-histograms", "latency-cdfs", "speedup"}
    assert charts["speedup"] == 4  # two reports against the baseline, p50 and p90 each
    assert browser.execute_script("return document.querySelectorAll('#latency-cdfs g[aria-label=\"line\"] path')"
                                  ".length") == 3
    _probe(browser, "report_compare.png")
    base, small, alone = (_load(runs, n) for n in ("base.json", "small.json", "alone.json"))
    table = {row[0]: row for row in csv.reader((runs / "csv" / "speedup.csv").open())}
    cells = {row[0]: row for row in table_cells(browser, "speedup-table")}
    for name, report, method in (("small", small, "paired"), ("alone", alone, None)):
        for offset, metric in ((3, "p50_ms"), (6, "p90_ms")):
            want = bench.speedup(base, report, metric)
            got = [float(v) for v in table[name][offset:offset + 3]]
            assert got == pytest.approx([want["estimate"], *want["ci"]], rel=1e-12)
            assert [float(v) for v in cells[name][offset:offset + 3]] == pytest.approx(got, rel=1e-3)
        if method:
            assert method in table[name][-1]
    assert table["base"][-1] == "baseline"
    assert set(p.stem for p in (runs / "csv").glob("*.csv")) == {"latency-histograms", "latency-cdfs", "speedup"}


def test_variants_tradeoff(runs, browser):  # noqa: F811 - the fixture
    document = _load(runs, "variants.json")
    measured = [row for row in document["variants"] if row["report"]]
    for page in ("variants.html", "variants-direct.html"):
        charts = _open_and_count(browser, runs / page)
        assert charts == {"tradeoff": len(measured)}
        assert browser.execute_script(
            "return document.querySelectorAll('#tradeoff text[aria-label=\"recommended\"]').length") == 1
    _probe(browser, "report_variants.png")
    rows = table_cells(browser, "tradeoff-table")
    assert [row[0] for row in rows] == [row["name"] for row in document["variants"]]
    recommended = [row[0] for row in rows if row[8] == "recommended"]
    assert recommended == [document["recommendation"]["variant"]]
    with (runs / "vcsv" / "tradeoff.csv").open() as handle:
        table = list(csv.reader(handle))[1:]
    for row, cells in zip(document["variants"], table):
        assert int(cells[1]) == row["size_bytes"]
        ratio = row["speedup_p90"]
        assert float(cells[3]) == pytest.approx(ratio["estimate"], rel=1e-12)
        if row["drift"]:
            assert float(cells[6]) == pytest.approx(row["drift"]["cosine_mean"], rel=1e-12)


def test_variants_page_lists_failed_rows_and_perplexity(runs):
    """A failed row is in the table, not on the chart; a GGUF document's drift is its perplexity increase."""
    from edgebench.agent.engine.html import several

    document = _load(runs, "variants.json")
    document["variants"].append({"name": "static-int8", "size_bytes": None, "error": "could not be produced: x",
                                 "report": None, "drift": None, "speedup_p90": None})
    for row in document["variants"][1:-1]:
        row["drift"] = {"perplexity_increase": 0.02}
    built = several.variants_page(document)
    chart = built.charts[0]
    assert chart.points == len(document["variants"]) - 1 and chart.options["color"] == "perplexity increase"
    assert chart.rows[-1][0] == "static-int8" and chart.rows[-1][-1] == "could not be produced: x"
    assert chart.rows[1][6] == 0.02 and chart.options["reverse"]


def test_compare_page(runs, browser):  # noqa: F811 - the fixture
    document = _load(runs, "cmp.json")
    charts = _open_and_count(browser, runs / "cmp.html")
    assert charts == {"compare-latency": 4}
    drift = {row[0]: row[1] for row in table_cells(browser, "drift-table")}
    assert float(drift["cosine_mean"]) == pytest.approx(document["drift"]["cosine_mean"], rel=1e-3)
    rows = table_cells(browser, "compare-latency-table")
    assert float(rows[-1][2]) == pytest.approx(document["latency"]["speedup"]["estimate"], rel=1e-3)


def test_a_mix_is_one_line(cli, runs, tmp_path):
    result = cli("report", runs / "variants.json", runs / "base.json", "--html", tmp_path / "out.html")
    assert result.code == 2 and len(result.err.splitlines()) == 1, result
    assert "variants is a variants document, base is a bench report" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "out.html").exists()


def test_several_without_html_is_one_line(cli, runs):
    result = cli("report", runs / "base.json", runs / "small.json")
    assert result.code == 2 and "--html" in result.err and len(result.err.splitlines()) == 1, result


def test_one_page_builder():
    """Every page comes from render_page: the drawing code is in page.py once."""
    from edgebench.agent.engine.html import page, several

    assert "DRAW" not in vars(several) and page.DRAW.count("const DRAWERS") == 1
