"""Release gates: "did model X on board class Y stay under its budget, and did it regress?"

Rules come from a TOML file (``[[gate]]`` tables, docs/gates.md). Results come from a source: bench reports and
variants documents on disk (``--reports``), the collector, or InfluxDB. A rule judges every matching model x board
class x configuration (runtime, the delegate chain asked for, threads, variant) on its own: one verdict each, never
the newest of them only.

A latency regression against a ``baseline`` release is decided on between-run variation, not on one run's samples
(samples of one run are not independent: noise comes in bursts): each side is a set of *units*, the repeats of its
runs (``stats.interval.<metric>.per_unit``) or, for a run without repeats, its one headline value; the baseline
side may hold several runs. ``stats.regression_verdict`` gives three outcomes: pass, fail, or inconclusive (the
interval straddles the allowance: more repeats would decide). With missing data that makes four verdicts, each
with its exit code: never a silent pass.
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
from edgebench.agent.errors import EXIT_FAILURE, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE, UsageError, first_line
from edgebench.agent.fleet import protocol as p
from edgebench.server import lineprotocol
from edgebench.server import schema as db
from edgebench.server.result_metrics import (
    drift_fields,
    gate_intervals,
    gate_metrics,
    repeat_units,
    summary_fields,
    workload,
)

# metric -> (description, unit, decided on between-run units (latency) or on the latest values)
METRICS = {
    "p50_ms": ("p50 latency", "ms", True),
    "p90_ms": ("p90 latency", "ms", True),
    "p99_ms": ("p99 latency", "ms", True),
    "energy_mj": ("energy per inference", "mJ", False),
    "peak_rss_mb": ("peak memory (RSS)", "MB", False),
    "drift_max_abs_err": ("max abs error vs the float model", "", False),
    "drift_cosine": ("cosine similarity vs the float model", "", False),
    "delegate_coverage": ("fraction of the model's nodes on the first-choice delegate/provider", "", False),
    "delegate_loaded": ("first-choice delegate/provider loaded (1) or the chain fell back (0)", "", False),
    # language models (GGUF): the estimates over the repeats (docs/report.md, generation)
    "decode_tok_s": ("tokens decoded per second", "tok/s", False),
    "prefill_tok_s": ("prompt tokens prefilled per second", "tok/s", False),
    "ttft_ms": ("time to first token", "ms", False),
    "energy_per_token_mj": ("energy per decoded token", "mJ", False),
    "prefill_energy_per_token_mj": ("energy per prompt token prefilled", "mJ", False),
}
# a regression is a fall
HIGHER_IS_BETTER = ("drift_cosine", "delegate_coverage", "delegate_loaded", "decode_tok_s", "prefill_tok_s")
MAX_RUNS = 10  # runs of a side a regression compares at most (sources deliver this many per configuration)
DEFAULT_MIN_REPEATS = 3  # units per side below which a regression is inconclusive
RULE_KEYS = {"name", "model", "devices", "metric", "max", "min", "baseline", "max_regression_pct", "runtime",
             "delegate", "variant", "baseline_runs", "candidate_runs", "min_repeats"}
_TEXT_KEYS = ("name", "model", "metric", "devices", "baseline", "runtime", "delegate", "variant")
_NUMBER_KEYS = ("max", "min", "max_regression_pct")
_COUNT_KEYS = {"baseline_runs": (1, MAX_RUNS), "candidate_runs": (1, MAX_RUNS), "min_repeats": (2, 1000)}
PASS, FAIL, MISSING, INCONCLUSIVE = "pass", "fail", "missing", stats.INCONCLUSIVE
STATUSES = (PASS, FAIL, MISSING, INCONCLUSIVE)


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
    baseline_runs: int = MAX_RUNS  # the newest K runs of the baseline release
    candidate_runs: int = 1  # the newest K runs of the candidate's release (the newest run alone by default)
    min_repeats: int = DEFAULT_MIN_REPEATS  # units per side a regression needs

    @property
    def latency(self) -> bool:
        return METRICS[self.metric][2]


@dataclass
class Result:
    """One benchmark result as the gates see it, whatever its source."""

    model: str
    labels: dict
    runtime: str
    delegate: str  # the chain that ran
    variant: Optional[str]
    created: str
    metrics: dict  # gate metric -> the headline value (the pooled percentile for latency)
    source: str = ""
    requested: str = ""  # the delegate/provider chain asked for ("": unknown, the chain that ran stands for it)
    threads: Optional[int] = None
    intervals: dict = field(default_factory=dict)  # latency metric -> {estimate, ci, per_unit} (gate_intervals)
    interval_method: Optional[str] = None  # between-repeats, batch-means, or None (a report without an interval)
    interleave: Optional[tuple] = None  # (group, slot) of an interleaved run
    workload: str = ""  # a language model's token counts (result_metrics.workload); "" for any other model
    # latency metric -> (sd on the log scale, runs): how much this configuration's runs differed on its machine beyond
    # their repeats, from the report's run history (agent/engine/history.py); reports only
    between_runs: dict = field(default_factory=dict)

    @property
    def board_class(self) -> str:
        return self.labels.get("class", "unlabelled")

    @property
    def config_key(self) -> tuple:
        """What makes two results of one model and board class the same configuration."""
        return (self.runtime, self.requested or self.delegate, self.threads or 0, self.variant or "", self.workload)

    @property
    def config(self) -> str:
        """The configuration in words: ``litert xnnpack, 4 threads, variant fp16`` (``llamacpp cpu, 4 threads,
        prompt 512 + 128 tokens``)."""
        text = " ".join(part for part in (self.runtime, self.requested or self.delegate) if part) or "-"
        if self.threads:
            text += f", {self.threads} thread{'s' if self.threads != 1 else ''}"
        return text + (f", variant {self.variant}" if self.variant else "") + (
            f", {self.workload}" if self.workload else "")

    def estimate(self, metric: str) -> object:
        """The run's value of a metric: the interval's estimate (the typical repeat's, for latency) where the
        result has one, else its headline value."""
        estimate = (self.intervals.get(metric) or {}).get("estimate")
        return estimate if estimate is not None else self.metrics.get(metric)

    def interval(self, metric: str) -> Optional[list]:
        ci = (self.intervals.get(metric) or {}).get("ci")
        return list(ci) if ci and all(is_finite(v) for v in ci) else None

    def units(self, metric: str) -> list:
        """Between-run units of a latency metric: each repeat's value when the result has repeats, else its one
        headline value (a run without repeats, an edgebench.bench/1 report, a run cut into batches)."""
        per_unit = (self.intervals.get(metric) or {}).get("per_unit")
        return list(per_unit) if per_unit else [self.metrics.get(metric)]


@dataclass
class Verdict:
    rule: Rule
    board_class: str
    status: str
    message: str
    value: Optional[float] = None
    result: Optional[Result] = None
    regression: Optional[dict] = None
    model: Optional[str] = None  # the judged model (None: nothing matched the rule)
    config: str = ""  # the judged configuration (Result.config)
    notes: list = field(default_factory=list)
    interval: Optional[list] = None  # the value's confidence interval, when the result has one

    @property
    def case(self) -> str:
        """Rule x model x configuration: unique among the verdicts of one evaluation (with the board class, the
        JUnit test case: ``gates.<class>`` / this)."""
        return f"{self.rule.name}: {self.model} ({self.config})" if self.model else self.rule.name

    def to_dict(self) -> dict:
        return {"rule": self.rule.name, "model": self.rule.model, "metric": self.rule.metric,
                "board_class": self.board_class, "config": self.config, "case": self.case, "status": self.status,
                "message": self.message, "notes": self.notes, "value": self.value, "interval": self.interval,
                "max": self.rule.max, "min": self.rule.min, "baseline": self.rule.baseline,
                "regression": self.regression, "source": self.result.source if self.result else None,
                "result_created": self.result.created if self.result else None,
                "result_model": self.model,
                "result_labels": self.result.labels if self.result else None}


# ---------------------------------------------------------------- rules

def parse_selector(text: str) -> dict:
    selector = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
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
    if "min_samples" in table:  # the old sample bootstrap's key: say what replaced it
        raise UsageError(f"{where}: min_samples = {table['min_samples']!r}: a regression is no longer decided on "
                         f"one run's samples but on repeats; use min_repeats = N (units per side, default "
                         f"{DEFAULT_MIN_REPEATS})")
    for key, (low, high) in _COUNT_KEYS.items():
        value = table.get(key)
        if key in table and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise UsageError(f"{where}: {key} = {value!r} is not an integer from {low} to {high}")
    if "max" in table and "min" in table and table["min"] > table["max"]:
        raise UsageError(f"{where}: min = {table['min']!r} is above max = {table['max']!r}: no value can pass")


def _default_name(rule: Rule, table: dict) -> str:
    name = f"{rule.model} {rule.metric}" + (f" [{table['devices']}]" if rule.devices else "")
    for key in ("runtime", "delegate", "variant"):
        if table.get(key):
            name += f" {key}={table[key]}"
    return name


def _rule(table: dict, index: int, path: str) -> Rule:
    where = f"{path}: gate #{index + 1}" + (f" ({table['name']})" if isinstance(table.get("name"), str) else "")
    unknown = set(table) - RULE_KEYS - {"min_samples"}
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
    for key in _COUNT_KEYS:
        if key in table and (table.get("baseline") is None or not METRICS[table["metric"]][2]):
            raise UsageError(f"{where}: {key} applies to a latency regression (p50_ms, p90_ms, p99_ms with a "
                             f"baseline)")
    rule = Rule(model=table["model"], metric=table["metric"], devices=parse_selector(table.get("devices", "")),
                max=table.get("max"), min=table.get("min"), baseline=table.get("baseline"),
                max_regression_pct=float(table.get("max_regression_pct", 0.0)), runtime=table.get("runtime"),
                delegate=table.get("delegate"), variant=table.get("variant"),
                baseline_runs=table.get("baseline_runs", MAX_RUNS), candidate_runs=table.get("candidate_runs", 1),
                min_repeats=table.get("min_repeats", DEFAULT_MIN_REPEATS))
    rule.name = table.get("name") or _default_name(rule, table)
    return rule


def load_rules(path: str) -> list[Rule]:
    from edgebench.agent.modelfile import load_toml

    return rules_from_document(load_toml(Path(path), "gates file"), path)


def rules_from_document(document: dict, where: str) -> list[Rule]:
    """Rules from a parsed gates document (``{"gate": [table, ...]}``, as TOML or JSON). Names are unique (the
    JUnit test cases and the verdict history are keyed by them): a name given twice is an error; two rules
    whose default names meet get their number."""
    tables = document.get("gate") if isinstance(document, dict) else None
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{where}: no [[gate]] tables")
    rules = [_rule(table, i, where) for i, table in enumerate(tables)]
    named = [rule.name for rule, table in zip(rules, tables) if table.get("name")]
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        raise UsageError(f"{where}: more than one rule is named {twice[0]!r}: rule names must be unique (JUnit test "
                         f"cases and the verdict history are keyed by them)")
    taken = set(named)
    for index, (rule, table) in enumerate(zip(rules, tables)):
        if not table.get("name"):
            if rule.name in taken:
                rule.name += f" (gate #{index + 1})"
            taken.add(rule.name)
    return rules


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


# ---------------------------------------------------------------- results, from a summary's fields

def threads_of(value: object) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value or None
    return int(value) if isinstance(value, str) and value.isdigit() and int(value) else None


def result_from_fields(fields: dict, units: Sequence[dict], **identity) -> Result:
    """A Result from a result's fields (``summary_fields``, or an ``edgebench_result`` point read back) and its
    repeats' values (``repeat_units``, or the ``edgebench_repeat`` points): the same derivation for every source
    (edgebench.server.result_metrics)."""
    group, slot = fields.get("interleave_group"), fields.get("interleave_slot")
    return Result(metrics=gate_metrics(fields), intervals=gate_intervals(fields, units),
                  interval_method=fields.get("interval_method"), requested=fields.get("delegate_requested") or "",
                  interleave=(group, slot) if group is not None and slot is not None else None,
                  workload=workload(fields), **identity)


def result_from_report(report: dict, source: str, labels: dict, variant: Optional[str] = None,
                       drift: Optional[dict] = None) -> Result:
    runtime = report.get("runtime", {})
    result = result_from_fields({**summary_fields(report), **drift_fields(drift)}, repeat_units(report),
                                model=report["model"]["name"], labels={**report.get("labels", {}), **labels},
                                runtime=runtime.get("runtime", ""), delegate=",".join(runtime.get("used") or []),
                                threads=threads_of(runtime.get("threads")), variant=variant,
                                created=report.get("created", ""), source=source)
    history = (report["stats"].get("interval") or {}).get("history") or {}
    result.between_runs = {metric: (sd, history["runs"]) for metric, sd in (history.get("between_run_sd") or {}).items()
                           if METRICS.get(metric, (None, None, False))[2]}
    return result


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


def _checked_report(report: dict) -> dict:
    """A report whose parts have the shapes evaluation relies on (a hand-edited report may not): the interval, the
    placement and a language model's generation checked as the fleet protocol checks a result's (without its
    bounds on the number of repeats and of fallback rows)."""
    if report.get("placement") is not None:  # the delegate_coverage gates judge: a report on disk may be edited
        if not isinstance(report["placement"], dict):
            raise ValueError("placement is not an object")
        p.check_placement(report["placement"], "placement", max_rows=sys.maxsize)
    interval = report["stats"].get("interval")
    if interval is not None:
        if not isinstance(interval, dict):
            raise ValueError("stats.interval is not an object")
        p.check_interval(interval, "stats.interval", max_units=sys.maxsize)  # its history too
    if report.get("interleave") is not None:
        if not isinstance(report["interleave"], dict):
            raise ValueError("interleave is not an object")
        p.check_interleave(report["interleave"])
    if report.get("generation") is not None:  # the decode_tok_s... gates judge
        if not isinstance(report["generation"], dict):
            raise ValueError("generation is not an object")
        p.check_generation(report["generation"], "generation", max_units=sys.maxsize)
    latency = (report.get("samples") or {}).get("latency_ns") or ()
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in latency):
        raise ValueError("samples.latency_ns holds values that are not non-negative integer nanoseconds")
    return report


def _checked(result: Result) -> Result:
    """A result whose fields have the types evaluation relies on."""
    for name in ("model", "created", "runtime"):
        if not isinstance(getattr(result, name), str):
            raise ValueError(f"{name} {getattr(result, name)!r} is not a string")
    if not isinstance(result.labels, dict):
        raise ValueError("labels is not an object")
    return result


def _report_results(document: dict, path: str, labels: dict) -> list[Result]:
    schema = document.get("schema", "")
    if not isinstance(schema, str) or not schema.startswith(("edgebench.bench/", "edgebench.variants/")):
        raise UsageError(f"--reports {path}: not an edgebench bench or variants report (schema {schema!r})")
    if schema.startswith("edgebench.bench/"):
        return [_checked(result_from_report(_checked_report(document), path, labels))]
    return [_checked(result_from_report(_checked_report(row["report"]), path, labels, row["name"], row.get("drift")))
            for row in document["variants"] if row.get("report")]


def load_reports(paths: Iterable[str], labels: Optional[dict] = None) -> list[Result]:
    """Bench reports (edgebench.bench/1 and /2) and variants documents (edgebench.variants/1 and /2, one result per
    variant)."""
    results = []
    for path in paths:
        document = _read_report(path)
        try:
            results += _report_results(document, path, labels or {})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a ProtocolError is a ValueError
            detail = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else first_line(exc)
            raise UsageError(f"--reports {path}: not a well-formed edgebench report ({detail})") from None
    return results


# ---------------------------------------------------------------- results from the fleet (collector registry rows)

def utc_iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def result_from_fleet(row: dict, source: str) -> Result:
    """A collector result (``GET /api/v1/results``: summary, labels, finished) as a Result; ``created`` is when
    the run finished, so fleet results order by time like reports do."""
    summary = dict(row["summary"], labels={})
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


def _newest_first(results: Iterable[Result]) -> list[Result]:
    return sorted(results, key=lambda r: r.created, reverse=True)


def _fmt(value: float, unit: str) -> str:
    return f"{value:.4g}{unit}"


def _budget(rule: Rule, value: float, interval: Optional[list]) -> tuple[Optional[str], list[str]]:
    """(failure, notes): a budget fails only when the estimate is beyond it; an interval that reaches across it is
    a note (a rerun may land on the other side)."""
    unit = METRICS[rule.metric][1]
    said = f" (its confidence interval {_fmt(interval[0], '')}-{_fmt(interval[1], unit)})" if interval else ""
    if rule.max is not None and value > rule.max:
        return f"{rule.metric} {_fmt(value, unit)} is over the budget {rule.max:g}{unit}{said}", []
    if rule.min is not None and value < rule.min:
        return f"{rule.metric} {_fmt(value, unit)} is under the minimum {rule.min:g}{unit}{said}", []
    notes = []
    if interval and rule.max is not None and interval[1] > rule.max:
        notes.append(f"within the budget {rule.max:g}{unit}, but its confidence interval "
                     f"{_fmt(interval[0], '')}-{_fmt(interval[1], unit)} reaches over it: a rerun may not be")
    if interval and rule.min is not None and interval[0] < rule.min:
        notes.append(f"above the minimum {rule.min:g}{unit}, but its confidence interval "
                     f"{_fmt(interval[0], '')}-{_fmt(interval[1], unit)} reaches under it: a rerun may not be")
    return None, notes


def _side(runs: Sequence[Result], metric: str) -> list[tuple[Optional[tuple], object]]:
    """The units of one side, each with its pairing key: (interleave group, slot, unit index), or None."""
    return [((run.interleave[0], run.interleave[1], index) if run.interleave else None, value)
            for run in runs for index, value in enumerate(run.units(metric))]


def _paired(base: list, cand: list) -> Optional[tuple[list, list]]:
    """Units that ran side by side: both sides of one interleaved run (every unit carries the same group),
    matched by slot and unit index. None when the sides were measured apart."""
    keys = [key for key, _ in base + cand]
    if not base or not cand or None in keys or len({key[0] for key in keys}) != 1:
        return None
    b, c = dict(base), dict(cand)
    common = sorted(set(b) & set(c))
    return ([b[k] for k in common], [c[k] for k in common]) if common else None


def _history(runs: Sequence[Result], metric: str) -> Optional[tuple[float, float]]:
    """The largest between-run spread the runs' reports recorded from their machine's history (at least 3 runs
    behind it), with its degrees of freedom; None when none did."""
    known = [run.between_runs[metric] for run in runs if run.between_runs.get(metric, (0, 0))[1] >= 3]
    if not known:
        return None
    sd, count = max(known)
    return float(sd), float(count - 1)


def _runs_said(test: dict) -> str:
    """How a verdict on sides measured apart dealt with the variation between runs."""
    runs = f" in {test['runs_baseline']} and {test['runs_candidate']} runs"
    if test.get("between_run_source") == "history":
        return (f"{runs}, runs of it on this machine differ by {test['between_run_sd']:.1%} beyond their repeats "
                f"(the reports' run history)")
    if test.get("between_run_sd"):
        return f"{runs}, runs differ by {test['between_run_sd']:.1%} beyond their repeats"
    if test.get("between_runs_measured"):
        return f"{runs}, runs differ no more than their repeats"
    return f"{runs}; between-run variation unmeasured (one run a side: baseline_runs >= 3 measures it)"


def _more_repeats(test: dict) -> int:
    """How many more repeats per side would decide an inconclusive test (stats.regression_verdict's
    ``needed_units`` is the total per side)."""
    return max(int(test["needed_units"]) - min(test["n_baseline"], test["n_candidate"]), 1)


def _sides(rule: Rule, candidates: list[Result], baselines: list[Result]) -> tuple[list[Result], list[Result]]:
    """The runs each side of a regression holds (both newest first). An interleaved run: its candidate runs and
    its baseline runs (both sides of one group). Else the newest ``candidate_runs`` runs of the newest candidate's
    release and the newest ``baseline_runs`` runs of the baseline release."""
    newest = candidates[0]
    if newest.interleave:
        group = newest.interleave[0]
        cands = [r for r in candidates if r.interleave and r.interleave[0] == group]
        bases = [r for r in baselines if r.interleave and r.interleave[0] == group]
        if bases:
            return cands[:MAX_RUNS], bases[:MAX_RUNS]
    release = newest.labels.get("release")
    cands = [r for r in candidates if r.labels.get("release") == release][:rule.candidate_runs]
    return cands, baselines[:rule.baseline_runs]


def _latency_regression(rule: Rule, candidates: list[Result], baselines: list[Result]
                        ) -> tuple[str, Optional[str], dict]:
    """(status, message, details) of a latency metric against the baseline release, on between-run units."""
    cand_runs, base_runs = _sides(rule, candidates, baselines)
    base, cand = _side(base_runs, rule.metric), _side(cand_runs, rule.metric)
    runs = {"baseline_runs": [r.source or r.created for r in base_runs],
            "candidate_runs": [r.source or r.created for r in cand_runs]}
    bad = [value for _, value in base + cand if not (is_finite(value) and value > 0)]
    if bad:
        return MISSING, (f"a {rule.metric} of the baseline or the candidate is not a positive finite number "
                         f"({bad[0]!r}): no verdict on it"), runs
    pairs = _paired(base, cand)
    b, c = pairs if pairs else ([v for _, v in base], [v for _, v in cand])
    # Measured apart, each side is its runs' units: with several runs on a side the between-run variation counts.
    sides = pairs or ([run.units(rule.metric) for run in base_runs], [run.units(rule.metric) for run in cand_runs])
    test = stats.regression_verdict(*sides, rule.max_regression_pct, paired=pairs is not None,
                                    min_units=rule.min_repeats, between_runs=_history(base_runs + cand_runs,
                                                                                      rule.metric))
    details = {**test, **runs, "baseline_units": b, "candidate_units": c}
    allowed = f"allowed {rule.max_regression_pct:g}%"
    counted = f"{len(b)} and {len(c)} repeats" + (", paired" if pairs else _runs_said(test))
    if test["verdict"] == stats.FAIL:
        low, high = test["ratio_ci"]
        return FAIL, (f"{rule.metric} regressed {test['change_pct']:+.1f}% vs {rule.baseline} "
                      f"({test['confidence']:.0%} interval of the ratio {low:.3f}-{high:.3f}x over {counted}; "
                      f"{allowed})"), details
    if test["verdict"] == stats.PASS:
        low, high = test["ratio_ci"]
        return PASS, (f"{test['change_pct']:+.1f}% vs {rule.baseline} ({test['confidence']:.0%} interval of the ratio "
                      f"{low:.3f}-{high:.3f}x over {counted}; {allowed})"), details
    more = _more_repeats(test)
    details["more_repeats"] = more
    if "ratio" not in test:
        return INCONCLUSIVE, (f"cannot tell a regression of {rule.metric} vs {rule.baseline} yet: needs about {more} "
                              f"more repeats per side (a side needs {rule.min_repeats}; has {len(b)} and {len(c)}; "
                              f"a run without repeats counts as one)"), details
    low, high = test["ratio_ci"]
    if test["needed_units"] < stats.MAX_UNITS_ESTIMATE:
        decide = f"needs about {more} more repeats per side"
    elif test.get("between_run_sd"):
        decide = ("its runs differ too much for more repeats to decide: measure the candidate in more runs "
                  "(candidate_runs) or interleaved with the baseline (edgebench bench --baseline-model)")
    else:
        decide = "the change is too close to the allowance for repeats to decide"
    return INCONCLUSIVE, (f"cannot tell yet whether {rule.metric} is within the {allowed}: "
                          f"{test['change_pct']:+.1f}% vs {rule.baseline}, {test['confidence']:.0%} interval of the "
                          f"ratio {low:.3f}-{high:.3f}x over {counted}; {decide}"), details


def _value_regression(rule: Rule, current: Result, baseline: Result) -> tuple[str, Optional[str], dict]:
    """Energy, memory, drift: the newest values of both sides, with the allowance."""
    old, new = baseline.metrics.get(rule.metric), current.metrics.get(rule.metric)
    if not (is_finite(old) and is_finite(new)) or old == 0:
        return MISSING, f"{rule.metric} is missing from the baseline or the current result, or not a number", {}
    change = (new / old - 1) * 100
    details = {"baseline": old, "current": new, "change_pct": change}
    higher_is_worse = rule.metric not in HIGHER_IS_BETTER
    worse = change if higher_is_worse else -change
    if worse > rule.max_regression_pct:
        return FAIL, (f"{rule.metric} changed {change:+.1f}% vs {rule.baseline} (allowed "
                      f"{rule.max_regression_pct:g}%)"), details
    return PASS, f"{change:+.1f}% vs {rule.baseline} (allowed {rule.max_regression_pct:g}%)", details


def _judge(rule: Rule, key: tuple, candidates: list[Result], baselines: list[Result]) -> Verdict:
    """The verdict on one model x board class x configuration (both lists newest first)."""
    model, board_class, _ = key
    if not candidates:
        return Verdict(rule, board_class, MISSING, f"only the baseline release {rule.baseline} has results for this "
                       f"configuration: no candidate to judge", model=model, config=baselines[0].config)
    current = candidates[0]
    verdict = Verdict(rule, board_class, MISSING, "", result=current, model=model, config=current.config)
    value = current.estimate(rule.metric)
    if value is None:
        verdict.message = f"the latest result has no {rule.metric}"
        return verdict
    if not is_finite(value):  # NaN compares false with every limit: it would pass them all
        verdict.message = f"the latest result's {rule.metric} is not a finite number ({value!r}): no verdict on it"
        return verdict
    verdict.value, verdict.interval = float(value), current.interval(rule.metric)
    failure, verdict.notes = _budget(rule, verdict.value, verdict.interval)
    outcomes = [(FAIL, failure)] if failure else []
    if rule.baseline is not None:
        if not baselines:
            outcomes.append((MISSING, f"no result labelled release={rule.baseline} to compare against"))
        elif rule.latency:
            status, message, verdict.regression = _latency_regression(rule, candidates, baselines)
            outcomes.append((status, message))
        else:
            status, message, verdict.regression = _value_regression(rule, current, baselines[0])
            outcomes.append((status, message))
    for status in (FAIL, MISSING, INCONCLUSIVE):
        said = [message for s, message in outcomes if s == status]
        if said:
            verdict.status, verdict.message = status, "; ".join(said)
            break
    else:
        verdict.status = PASS
        unit = METRICS[rule.metric][1]
        verdict.message = "; ".join([f"{rule.metric} {_fmt(verdict.value, unit)} within limits",
                                     *(message for _, message in outcomes if message)])
    if verdict.notes:
        verdict.message += "; note: " + "; ".join(verdict.notes)
    return verdict


def evaluate_rule(rule: Rule, results: Sequence[Result]) -> list[Verdict]:
    """One verdict per matching model x board class x configuration (the rule's baseline release judged as such,
    not as a candidate)."""
    groups: dict[tuple, tuple[list, list]] = {}
    for result in results:
        if matches(rule, result):
            is_baseline = rule.baseline is not None and result.labels.get("release") == rule.baseline
            groups.setdefault((result.model, result.board_class, result.config_key), ([], []))[is_baseline].append(
                result)
    if not groups:
        return [Verdict(rule, rule.devices.get("class", "any"), MISSING, "no result matches this rule")]
    return [_judge(rule, key, _newest_first(groups[key][0]), _newest_first(groups[key][1]))
            for key in sorted(groups, key=lambda k: (k[1], k[0], repr(k[2])))]


def evaluate(rules: Sequence[Rule], results: Sequence[Result]) -> list[Verdict]:
    return [v for rule in rules for v in evaluate_rule(rule, results)]


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 all pass; 1 a rule failed; 2 data missing (and nothing failed); 6 a regression cannot be told yet, more
    repeats would (and nothing failed or is missing)."""
    statuses = {v.status for v in verdicts}
    if FAIL in statuses:
        return EXIT_FAILURE
    if MISSING in statuses or not verdicts:
        return EXIT_USAGE  # 2: as for bad input, there is nothing to decide on
    return EXIT_INCONCLUSIVE if INCONCLUSIVE in statuses else EXIT_OK


def document(verdicts: Sequence[Verdict]) -> dict:
    """The ``edgebench.gates/1`` JSON document (``edgebench gate --json`` and ``/api/gates/evaluate``)."""
    return {"schema": "edgebench.gates/1", "exit_code": exit_code(verdicts),
            "verdicts": [v.to_dict() for v in verdicts]}


# ---------------------------------------------------------------- outputs

def verdict_record(v: dict) -> dict:
    """What is recorded of one verdict (a ``Verdict.to_dict()`` record), in InfluxDB and in the collector's registry
    alike, so the dashboard and the collector's page show the same history: ``model``: the judged result's model,
    else the rule's pattern; ``config``: the judged configuration; ``value``: None when there is none."""
    return {db.RULE: v["rule"], db.MODEL: v.get("result_model") or v["model"],
            db.BOARD_CLASS: v.get("board_class") or "unlabelled", db.CONFIG: v.get("config") or "",
            db.STATUS: v["status"], "value": v.get("value"), "message": v["message"]}


def verdict_lines(verdicts: Sequence[dict], ts_ns: int) -> list[str]:
    """InfluxDB line protocol of verdicts (``Verdict.to_dict()`` records) for the gate-history dashboard: the
    ``edgebench_gate`` measurement of edgebench.server.schema (verdict_record's; field ``value`` absent when there
    is none). One evaluation shares one time (plus the verdict's index in ns)."""
    lines = []
    for index, v in enumerate(verdicts):
        record = verdict_record(v)
        tags = {key: record[key] for key in db.GATE.tags}
        fields = db.GATE.values({"passed": v["status"] == PASS, "value": record["value"], "message": v["message"]})
        lines.append(lineprotocol.line(db.GATE.name, tags, fields, int(ts_ns) + index))
    return lines


def junit_xml(verdicts: Sequence[Verdict], suite: str = "edgebench gates") -> str:
    """One ``<testcase>`` per rule x model x board class x configuration (classname ``gates.<class>``, name
    ``Verdict.case``): ``<failure>`` for fail, ``<error>`` for missing (DataMissing) and inconclusive
    (Inconclusive): neither is a pass."""
    root = ElementTree.Element("testsuites")
    failures = sum(v.status == FAIL for v in verdicts)
    errors = sum(v.status in (MISSING, INCONCLUSIVE) for v in verdicts)
    node = ElementTree.SubElement(root, "testsuite", name=suite, tests=str(len(verdicts)),
                                  failures=str(failures), errors=str(errors))
    for v in verdicts:
        case = ElementTree.SubElement(node, "testcase", classname=f"gates.{v.board_class}", name=v.case)
        if v.status == FAIL:
            ElementTree.SubElement(case, "failure", message=v.message, type="GateFailed").text = v.message
        elif v.status in (MISSING, INCONCLUSIVE):
            kind = "DataMissing" if v.status == MISSING else "Inconclusive"
            ElementTree.SubElement(case, "error", message=v.message, type=kind).text = v.message
        else:
            ElementTree.SubElement(case, "system-out").text = v.message
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def _value_text(v: Verdict) -> str:
    if v.value is None:
        return "–"
    unit = METRICS[v.rule.metric][1]
    text = f"{v.value:.4g} {unit}".strip()
    return text + (f" ({v.interval[0]:.4g}-{v.interval[1]:.4g})" if v.interval else "")


def markdown(verdicts: Sequence[Verdict]) -> str:
    icon = {PASS: "✅ pass", FAIL: "❌ fail", MISSING: "⚠️ missing", INCONCLUSIVE: "❔ inconclusive"}
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    lines = [f"### edgebench release gates: {counts[PASS]} passed, {counts[FAIL]} failed, "
             f"{counts[INCONCLUSIVE]} inconclusive, {counts[MISSING]} missing", "",
             "| gate | model | configuration | board class | verdict | value | detail |",
             "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.rule.name} | {v.model or v.rule.model} | {v.config or '–'} | {v.board_class} | "
                     f"{icon[v.status]} | {_value_text(v)} | {v.message} |")
    return "\n".join(lines) + "\n"


def terminal(verdicts: Sequence[Verdict]) -> str:
    from edgebench.agent.engine.report import table

    rows = [[v.status.upper(), v.rule.name, v.model or v.rule.model, v.config or "-", v.board_class, v.message]
            for v in verdicts]
    return "\n".join(table(["verdict", "gate", "model", "configuration", "board class", "detail"], rows,
                           align_left=6))
