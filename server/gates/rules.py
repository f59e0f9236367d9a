"""Release gates: "did model X on board class Y stay under its budget, and did it regress?"

Rules come from a TOML file (``[[gate]]`` tables, docs/gates.md). Results come from a source: bench
reports and variants documents on disk (``--reports``), or later the collector's InfluxDB. Each rule is
evaluated per board class on the latest matching result; a regression against a ``baseline`` release uses
the raw latency samples and stats.quantile_regression, so run-to-run noise does not fail a release.
Verdicts: pass, fail, or missing (no data, or too little to decide): never a silent pass.
"""

from __future__ import annotations

import fnmatch
import json
import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence
from xml.etree import ElementTree

from edgebench.agent.engine import stats
from edgebench.agent.errors import UsageError, first_line
from edgebench.server import lineprotocol
from edgebench.server import schema as db
from edgebench.server.result_metrics import drift_fields, gate_metrics, summary_fields

# metric -> (description, unit, quantile for sample-based regression tests or None)
METRICS = {
    "p50_ms": ("p50 latency", "ms", 0.5),
    "p90_ms": ("p90 latency", "ms", 0.9),
    "p99_ms": ("p99 latency", "ms", 0.99),
    "energy_mj": ("energy per inference", "mJ", None),
    "peak_rss_mb": ("peak memory (RSS)", "MB", None),
    "drift_max_abs_err": ("max abs error vs the float model", "", None),
    "drift_cosine": ("cosine similarity vs the float model", "", None),
    "delegate_coverage": ("first-choice delegate/provider ran (1) or fell back (0)", "", None),
}
RULE_KEYS = {"name", "model", "devices", "metric", "max", "min", "baseline", "max_regression_pct", "runtime",
             "delegate", "variant", "min_samples"}
_TEXT_KEYS = ("name", "model", "metric", "devices", "baseline", "runtime", "delegate", "variant")
_NUMBER_KEYS = ("max", "min", "max_regression_pct")
PASS, FAIL, MISSING = "pass", "fail", "missing"


def is_finite(value: object) -> bool:
    """A real number, not NaN or infinite: the only thing a budget or a measured value may be."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Rule:
    model: str
    metric: str
    name: str = ""
    devices: dict = field(default_factory=dict)  # label selector, e.g. {"class": "rpi5"}
    max: Optional[float] = None
    min: Optional[float] = None
    baseline: Optional[str] = None  # a release label
    max_regression_pct: float = 0.0
    runtime: Optional[str] = None
    delegate: Optional[str] = None
    variant: Optional[str] = None


@dataclass
class Result:
    """One benchmark result as the gates see it, whatever its source."""

    model: str
    labels: dict
    runtime: str
    delegate: str
    variant: Optional[str]
    created: str
    metrics: dict
    latency_ns: Sequence[int] = ()
    source: str = ""

    @property
    def board_class(self) -> str:
        return self.labels.get("class", "unlabelled")


@dataclass
class Verdict:
    rule: Rule
    board_class: str
    status: str
    message: str
    value: Optional[float] = None
    result: Optional[Result] = None
    regression: Optional[dict] = None

    def to_dict(self) -> dict:
        return {"rule": self.rule.name, "model": self.rule.model, "metric": self.rule.metric,
                "board_class": self.board_class, "status": self.status, "message": self.message,
                "value": self.value, "max": self.rule.max, "min": self.rule.min, "baseline": self.rule.baseline,
                "regression": self.regression, "source": self.result.source if self.result else None,
                "result_created": self.result.created if self.result else None,
                "result_model": self.result.model if self.result else None,
                "result_labels": self.result.labels if self.result else None}


# ---------------------------------------------------------------- rules

def parse_selector(text: str) -> dict:
    selector = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"device selector {text!r}: expected key=value[,key=value]")
        selector[key.strip()] = value.strip()
    return selector


def _check_types(table: dict, where: str) -> None:
    """Every value of the type its key needs; a NaN or infinite limit is a mistake, never a budget."""
    for key in _TEXT_KEYS:
        if key in table and not isinstance(table[key], str):
            raise UsageError(f"{where}: {key} = {table[key]!r} is not a string")
    for key in _NUMBER_KEYS:
        if key in table and not is_finite(table[key]):
            raise UsageError(f"{where}: {key} = {table[key]!r} is not a finite number")
    if table.get("max_regression_pct", 0) < 0:
        raise UsageError(f"{where}: max_regression_pct = {table['max_regression_pct']!r} is negative")
    samples = table.get("min_samples", 1)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise UsageError(f"{where}: min_samples = {samples!r} is not a positive integer")
    if "max" in table and "min" in table and table["min"] > table["max"]:
        raise UsageError(f"{where}: min = {table['min']!r} is above max = {table['max']!r}: no value can pass")


def _rule(table: dict, index: int, path: str) -> Rule:
    where = f"{path}: gate #{index + 1}" + (f" ({table['name']})" if isinstance(table.get("name"), str) else "")
    unknown = set(table) - RULE_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("model", "metric"):
        if not isinstance(table.get(key), str):
            raise UsageError(f"{where}: needs {key} = \"...\"")
    _check_types(table, where)
    if table["metric"] not in METRICS:
        raise UsageError(f"{where}: unknown metric {table['metric']!r}; one of {', '.join(METRICS)}")
    if all(table.get(k) is None for k in ("max", "min", "baseline")):
        raise UsageError(f"{where}: needs a budget (max or min) or a baseline to compare against")
    rule = Rule(model=table["model"], metric=table["metric"], devices=parse_selector(table.get("devices", "")),
                max=table.get("max"), min=table.get("min"), baseline=table.get("baseline"),
                max_regression_pct=float(table.get("max_regression_pct", 0.0)), runtime=table.get("runtime"),
                delegate=table.get("delegate"), variant=table.get("variant"))
    rule.name = table.get("name") or f"{rule.model} {rule.metric}" + (f" [{table['devices']}]" if rule.devices else "")
    return rule


def load_rules(path: str) -> list[Rule]:
    from edgebench.agent.modelfile import load_toml

    return rules_from_document(load_toml(Path(path), "gates file"), path)


def rules_from_document(document: dict, where: str) -> list[Rule]:
    """Rules from a parsed gates document (``{"gate": [table, ...]}``, as TOML or JSON)."""
    tables = document.get("gate") if isinstance(document, dict) else None
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{where}: no [[gate]] tables")
    return [_rule(table, i, where) for i, table in enumerate(tables)]


def rules_from_toml(text: str, where: str = "gates") -> list[Rule]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10
        import tomli as tomllib
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where} is not valid TOML: {exc}") from None
    return rules_from_document(document, where)


# ---------------------------------------------------------------- results from bench reports on disk

def result_from_report(report: dict, source: str, labels: dict, variant: Optional[str] = None,
                       drift: Optional[dict] = None) -> Result:
    runtime = report.get("runtime", {})
    metrics = gate_metrics({**summary_fields(report), **drift_fields(drift)})
    return Result(model=report["model"]["name"], labels={**report.get("labels", {}), **labels},
                  runtime=runtime.get("runtime", ""), delegate=",".join(runtime.get("used") or []),
                  variant=variant, created=report.get("created", ""), metrics=metrics,
                  latency_ns=report.get("samples", {}).get("latency_ns", ()), source=source)


def _read_report(path: str) -> dict:
    from edgebench.agent.modelfile import file_problem

    problem = file_problem(Path(path))  # a FIFO would block read_text() forever
    if problem:
        raise UsageError(f"--reports {path} {problem}")
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError (a binary file) is a ValueError
        raise UsageError(f"--reports {path}: not a readable JSON report ({first_line(exc)})") from None
    if not isinstance(document, dict):
        raise UsageError(f"--reports {path}: not an edgebench report (a JSON {type(document).__name__}, not an object)")
    return document


def _checked(result: Result) -> Result:
    """A result whose fields have the types evaluation relies on (a hand-edited report may not)."""
    for name in ("model", "created", "runtime"):
        if not isinstance(getattr(result, name), str):
            raise ValueError(f"{name} {getattr(result, name)!r} is not a string")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in result.latency_ns):
        raise ValueError("samples.latency_ns holds values that are not non-negative integer nanoseconds")
    return result


def _report_results(document: dict, path: str, labels: dict) -> list[Result]:
    schema = document.get("schema", "")
    if not isinstance(schema, str) or not schema.startswith(("edgebench.bench/", "edgebench.variants/")):
        raise UsageError(f"--reports {path}: not an edgebench bench or variants report (schema {schema!r})")
    if schema.startswith("edgebench.bench/"):
        return [_checked(result_from_report(document, path, labels))]
    return [_checked(result_from_report(row["report"], path, labels, row["name"], row.get("drift")))
            for row in document["variants"] if row.get("report")]


def load_reports(paths: Iterable[str], labels: Optional[dict] = None) -> list[Result]:
    """Bench reports (edgebench.bench/1) and variants documents (edgebench.variants/1, one result per variant)."""
    results = []
    for path in paths:
        document = _read_report(path)
        try:
            results += _report_results(document, path, labels or {})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            detail = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else first_line(exc)
            raise UsageError(f"--reports {path}: not a well-formed edgebench report ({detail})") from None
    return results


# ---------------------------------------------------------------- results from the fleet (collector registry rows)

def utc_iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def result_from_fleet(row: dict, source: str) -> Result:
    """A collector result (``GET /api/v1/results?samples=1``: summary, labels, latency_ns, finished) as a Result;
    ``created`` is when the run finished, so fleet results order by time like reports do."""
    summary = dict(row["summary"], samples={"latency_ns": row.get("latency_ns") or []}, labels={})
    result = result_from_report(summary, f"{source} job {row['job_id']} on {row['device_id']}",
                                row.get("labels") or {})
    result.labels.setdefault("device", row["device_id"])
    result.created = utc_iso(float(row.get("finished") or row.get("received") or 0))
    return result


# ---------------------------------------------------------------- evaluation

def matches(rule: Rule, result: Result) -> bool:
    return (fnmatch.fnmatch(result.model, rule.model)
            and all(result.labels.get(k) == v for k, v in rule.devices.items())
            and (rule.runtime is None or result.runtime == rule.runtime)
            and (rule.delegate is None or rule.delegate in result.delegate.split(","))
            and (rule.variant is None or result.variant == rule.variant))


def _latest(results: Iterable[Result]) -> Optional[Result]:
    return max(results, key=lambda r: r.created, default=None)


def _budget(rule: Rule, value: float) -> Optional[str]:
    unit = METRICS[rule.metric][1]
    if rule.max is not None and value > rule.max:
        return f"{rule.metric} {value:.4g}{unit} is over the budget {rule.max:g}{unit}"
    if rule.min is not None and value < rule.min:
        return f"{rule.metric} {value:.4g}{unit} is under the minimum {rule.min:g}{unit}"
    return None


def _regression(rule: Rule, current: Result, baseline: Result) -> tuple[Optional[str], Optional[str], dict]:
    """(failure, missing, details) of the comparison with the baseline release."""
    quantile = METRICS[rule.metric][2]
    if quantile is not None:
        test = stats.quantile_regression(baseline.latency_ns, current.latency_ns, quantile, rule.max_regression_pct)
        if not test["decided"]:
            return None, f"too few latency samples to test a regression ({test['reason']})", test
        if test["regressed"]:
            low, high = test["ratio_ci"]
            failure = (f"{rule.metric} regressed {test['change_pct']:+.1f}% vs {rule.baseline} (95% CI of the "
                       f"ratio {low:.3f}-{high:.3f}; allowed {rule.max_regression_pct:g}%)")
            return failure, None, test
        return None, None, test
    old, new = baseline.metrics.get(rule.metric), current.metrics.get(rule.metric)
    if not (is_finite(old) and is_finite(new)) or old == 0:
        return None, f"{rule.metric} is missing from the baseline or the current result, or not a number", {}
    change = (new / old - 1) * 100
    details = {"baseline": old, "current": new, "change_pct": change}
    higher_is_worse = rule.metric not in ("drift_cosine", "delegate_coverage")
    worse = change if higher_is_worse else -change
    if worse > rule.max_regression_pct:
        failure = f"{rule.metric} changed {change:+.1f}% vs {rule.baseline} (allowed {rule.max_regression_pct:g}%)"
        return failure, None, details
    return None, None, details


def _pass_message(rule: Rule, value: float, details: Optional[dict]) -> str:
    message = f"{rule.metric} {value:.4g}{METRICS[rule.metric][1]} within limits"
    if details and details.get("change_pct") is not None:
        message += f"; {details['change_pct']:+.1f}% vs {rule.baseline} (allowed {rule.max_regression_pct:g}%)"
    return message


def evaluate_rule(rule: Rule, results: Sequence[Result]) -> list[Verdict]:
    matching = [r for r in results if matches(rule, r)]
    candidates = [r for r in matching if rule.baseline is None or r.labels.get("release") != rule.baseline]
    classes = sorted({r.board_class for r in candidates}) or [rule.devices.get("class", "any")]
    verdicts = []
    for board_class in classes:
        current = _latest(r for r in candidates if r.board_class == board_class)
        if current is None:
            verdicts.append(Verdict(rule, board_class, MISSING, "no result matches this rule"))
            continue
        value = current.metrics.get(rule.metric)
        if value is None:
            verdicts.append(Verdict(rule, board_class, MISSING, f"the latest result has no {rule.metric}",
                                    result=current))
            continue
        if not is_finite(value):  # NaN compares false with every limit: it would pass them all
            verdicts.append(Verdict(rule, board_class, MISSING, f"the latest result's {rule.metric} is not a "
                                    f"finite number ({value!r}): no verdict on it", result=current))
            continue
        problems, missing, details = [_budget(rule, value)], None, None
        if rule.baseline is not None:
            base = _latest(r for r in matching if r.board_class == board_class
                           and r.labels.get("release") == rule.baseline)
            if base is None:
                missing = f"no result labelled release={rule.baseline} to compare against"
            else:
                failure, missing, details = _regression(rule, current, base)
                problems.append(failure)
        problems = [p for p in problems if p]
        status = FAIL if problems else MISSING if missing else PASS
        message = "; ".join(problems) or missing or _pass_message(rule, value, details)
        verdicts.append(Verdict(rule, board_class, status, message, value, current, details))
    return verdicts


def evaluate(rules: Sequence[Rule], results: Sequence[Result]) -> list[Verdict]:
    return [v for rule in rules for v in evaluate_rule(rule, results)]


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 all pass, 1 a rule failed, 2 data missing or too thin to decide (and nothing failed)."""
    statuses = {v.status for v in verdicts}
    return 1 if FAIL in statuses else 2 if MISSING in statuses or not verdicts else 0


def document(verdicts: Sequence[Verdict]) -> dict:
    """The ``edgebench.gates/1`` JSON document (``edgebench gate --json`` and ``/api/gates/evaluate``)."""
    return {"schema": "edgebench.gates/1", "exit_code": exit_code(verdicts),
            "verdicts": [v.to_dict() for v in verdicts]}


# ---------------------------------------------------------------- outputs

def verdict_lines(verdicts: Sequence[dict], ts_ns: int) -> list[str]:
    """InfluxDB line protocol of verdicts (``Verdict.to_dict()`` records) for the gate-history dashboard: the
    ``edgebench_gate`` measurement of edgebench.server.schema (tag ``model``: the judged result's model, else the
    rule's pattern; field ``value`` absent when there is none). One evaluation shares one time (plus the verdict's
    index in ns)."""
    lines = []
    for index, v in enumerate(verdicts):
        tags = {db.BOARD_CLASS: v.get("board_class") or "unlabelled", db.MODEL: v.get("result_model") or v["model"],
                db.RULE: v["rule"], db.STATUS: v["status"]}
        fields = db.GATE.values({"passed": v["status"] == PASS, "value": v.get("value"), "message": v["message"]})
        lines.append(lineprotocol.line(db.GATE.name, tags, fields, int(ts_ns) + index))
    return lines


def junit_xml(verdicts: Sequence[Verdict], suite: str = "edgebench gates") -> str:
    root = ElementTree.Element("testsuites")
    failures = sum(v.status == FAIL for v in verdicts)
    errors = sum(v.status == MISSING for v in verdicts)
    node = ElementTree.SubElement(root, "testsuite", name=suite, tests=str(len(verdicts)),
                                  failures=str(failures), errors=str(errors))
    for v in verdicts:
        case = ElementTree.SubElement(node, "testcase", classname=f"gates.{v.board_class}", name=v.rule.name)
        if v.status == FAIL:
            ElementTree.SubElement(case, "failure", message=v.message, type="GateFailed").text = v.message
        elif v.status == MISSING:
            ElementTree.SubElement(case, "error", message=v.message, type="DataMissing").text = v.message
        else:
            ElementTree.SubElement(case, "system-out").text = v.message
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def markdown(verdicts: Sequence[Verdict]) -> str:
    icon = {PASS: "✅ pass", FAIL: "❌ fail", MISSING: "⚠️ missing"}
    counts = {s: sum(v.status == s for v in verdicts) for s in (PASS, FAIL, MISSING)}
    lines = [f"### edgebench release gates: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[MISSING]} missing",
             "", "| gate | board class | verdict | value | detail |", "|---|---|---|---|---|"]
    for v in verdicts:
        value = f"{v.value:.4g} {METRICS[v.rule.metric][1]}".strip() if v.value is not None else "–"
        lines.append(f"| {v.rule.name} | {v.board_class} | {icon[v.status]} | {value} | {v.message} |")
    return "\n".join(lines) + "\n"


def terminal(verdicts: Sequence[Verdict]) -> str:
    from edgebench.agent.engine.report import table

    rows = [[v.status.upper(), v.rule.name, v.board_class, v.message] for v in verdicts]
    return "\n".join(table(["verdict", "gate", "board class", "detail"], rows, align_left=4))
