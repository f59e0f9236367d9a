"""This machine's own history of a configuration: how much its runs differ beyond their repeats.

One run's repeats share that run's minutes of the machine, so the spread between them says little about the next
run: on this project's 2-core CI VM the same model's p90 moved by 20% within an hour while each run's repeats
agreed within 2%, and the reports' rerun intervals, from the repeats alone, covered only 60% of identical reruns.
What a single run cannot see, the runs before it on this machine can (Pinpoint and Perfherder judge against a
history for the same reason). ``edgebench bench`` keeps the last HISTORY_RUNS runs' per-repeat percentiles of each
configuration (model file contents, runtime, delegates asked for, threads, inputs, pinned CPUs, host) in a small
JSON-lines file, and widens the report's ``rerun`` intervals by the between-run variation they show
(stats.rerun_interval). ``stats.interval.history`` says how many runs that was and how much they differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional

from edgebench.agent.engine import stats

log = logging.getLogger(__name__)

HISTORY_RUNS = 10  # this run and the 9 before it
OFF = "off"
KEPT_PERCENTILES = tuple(f"p{pct}_ms" for pct in stats.PERCENTILES)


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/edgebench/history``, else ``~/.cache/edgebench/history``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgebench" / "history"


def configuration_key(report: dict) -> str:
    """What makes two runs comparable: the same model file, runtime, delegates asked for, threads, inputs and CPUs,
    on the same host."""
    runtime = report.get("runtime") or {}
    what = {"model": (report.get("model") or {}).get("sha256"), "runtime": runtime.get("runtime"),
            "requested": runtime.get("requested"), "threads": runtime.get("threads"),
            "inputs": [(feed.get("name"), feed.get("shape"), feed.get("dtype"))
                       for feed in report.get("inputs_fed") or []],
            "cpus": ((report.get("noise") or {}).get("affinity") or {}).get("requested"),
            "host": (report.get("device") or {}).get("hostname")}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _past(lines: list[str]) -> list[dict]:
    """The configuration's earlier runs, oldest first; a line that is not a record is skipped (a run killed while
    writing leaves half a line)."""
    past = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("per_unit"), dict):
            past.append(record)
    return past


def _record(path: Path, line: str) -> list[str]:
    """Add this run's line to the file; return the lines that were there before it. The file is kept to its last
    HISTORY_RUNS runs once it holds twice as many (rewritten through a temporary file: never half a history)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(lines) + 1 > 2 * HISTORY_RUNS:
        temporary = path.with_suffix(".tmp")
        temporary.write_text("\n".join(lines[-(HISTORY_RUNS - 1):] + [line]) + "\n")
        temporary.replace(path)
    else:
        with path.open("a") as out:
            out.write(line + "\n")
    return lines


def apply(report: dict, directory: Optional[str]) -> None:
    """Widen ``report``'s rerun intervals by the between-run variation of its configuration's runs on this machine,
    then add this run to that history. Runs without repeats (batch means) neither use nor feed it: their units are
    parts of one run, not runs. A history that cannot be read or written is a warning, never a failed run."""
    interval = report["stats"].get("interval") or {}
    if directory in (None, OFF) or interval.get("method") != "between-repeats":
        return
    path = Path(directory) / f"{configuration_key(report)}.jsonl"
    current = {key: interval[key]["per_unit"] for key in KEPT_PERCENTILES if interval.get(key)}
    try:
        past = _past(_record(path, json.dumps({"created": report.get("created"), "per_unit": current})))
    except OSError as exc:
        log.warning("run history %s not used: %s", path, exc)
        return
    past = past[-(HISTORY_RUNS - 1):]
    between = {}
    for key, units in current.items():
        runs = [record["per_unit"][key] for record in past if _usable(record["per_unit"].get(key))] + [units]
        widened = stats.rerun_interval(runs, interval.get("confidence", stats.CONFIDENCE))
        between[key] = widened["between_run_sd"] if widened else 0.0
        if widened:
            entry = interval[key]
            entry["rerun_repeats_only"] = entry.get("rerun")
            entry["rerun"] = widened["rerun"]
    interval["history"] = {"runs": len(past) + 1, "between_run_sd": between, "file": str(path)}


def _usable(units: object) -> bool:
    return isinstance(units, list) and len(units) >= 2 and all(
        type(v) in (int, float) and v > 0 for v in units)
