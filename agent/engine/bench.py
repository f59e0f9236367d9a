"""`edgebench bench`: identify the model, run the protocol in an isolated child, assemble the report.

This is the single-board engine that fleet jobs, gates and the native harness reuse: callers build a
BenchRequest and get back the report document (plain data, schema ``edgebench.bench/1``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from edgebench.agent import __version__
from edgebench.agent.engine import provenance, stats
from edgebench.agent.engine.executors import Executor, executor_for
from edgebench.agent.engine.isolation import ChildLimits, ProgressFn
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.physics import PhysicsSettings, RunPhysics, relative, sustained_windows
from edgebench.agent.engine.report import SCHEMA, utc_now
from edgebench.agent.modelfile import ModelFile, identify
from edgebench.agent.runtimes import DEFAULT_FOR_FORMAT
from edgebench.agent.runtimes.base import RuntimeOptions


@dataclass
class BenchRequest:
    model: str
    runtime: Optional[str] = None  # None: chosen from the model's format
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    settings: RunSettings = field(default_factory=RunSettings)
    shape_args: Sequence[str] = ()  # --shape NAME=1x3x224x224, parsed in the child against the model
    input_args: Sequence[str] = ()  # --input NAME=file.npy | value | zeros/ones/random
    seed: int = 0
    limits: ChildLimits = field(default_factory=ChildLimits)
    physics: Optional[PhysicsSettings] = None  # None: no sensors (temperature, clocks, power) sampled
    sustained_window_s: Optional[float] = None  # set for sustained runs: report latency per window


def prepare(request: BenchRequest) -> tuple[ModelFile, dict, Executor]:
    """Check everything that can be checked without loading the model; return the model file, the worker
    request and the executor that will run it."""
    request.settings.validate()
    model = identify(request.model)
    runtime = request.runtime or DEFAULT_FOR_FORMAT[model.format]
    executor = executor_for(runtime)
    executor.check(model.format)
    worker_request = {
        "mode": "bench",
        "model": str(model.path),
        "runtime": runtime,
        "options": asdict(request.options),
        "settings": request.settings.to_dict(),
        "shape_args": list(request.shape_args),
        "input_args": list(request.input_args),
        "seed": request.seed,
    }
    return model, worker_request, executor


def _memory_section(child_memory: dict, rss_samples: list, origin_ns: int, measured_ns: int) -> dict:
    """The child's own checkpoints plus the parent's RSS samples, aligned to the measured phase."""
    aligned = [[t - origin_ns, rss] for t, rss in rss_samples]
    steady = [rss for offset, rss in aligned if 0 <= offset <= measured_ns]
    section = dict(child_memory)
    section["rss_samples"] = aligned  # [offset from the first measured run (ns), bytes]
    section["peak_sampled_bytes"] = max((rss for _, rss in aligned), default=None)
    section["peak_steady_sampled_bytes"] = max(steady, default=None)
    if section.get("peak_steady_bytes") is None:  # no VmHWM reset here: fall back to the samples
        section["peak_steady_bytes"] = section["peak_steady_sampled_bytes"]
        if steady:
            section["peak_method"] = "sampled"
    return section


def build_report(model: ModelFile, request: BenchRequest, result: dict, rss_samples: list) -> dict:
    measured = result["timing"]["measured"]
    summary = stats.summarize(result["samples"]["latency_ns"], result["wall_ns"])
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "model": {**model.to_dict(), "inputs": result["inputs"], "outputs": result["outputs"]},
        "runtime": result["backend"],
        "inputs_fed": result["feeds"],
        "settings": {**request.settings.to_dict(), "seed": request.seed},
        "timing": result["timing"],
        "stats": summary,
        "validity": stats.verdict(summary, measured["reached_min_runs"], measured["reached_min_duration"]),
        "memory": _memory_section(result["memory"], rss_samples, measured["origin_monotonic_ns"],
                                  result["wall_ns"]),
        "samples": result["samples"],
        "device": provenance.collect(edgebench_version=__version__),
    }


def run(request: BenchRequest, progress: Optional[ProgressFn] = None) -> dict:
    model, worker_request, executor = prepare(request)
    physics = RunPhysics(request.physics) if request.physics else None
    series = None
    try:
        if physics:
            physics.wait_until_cool(progress)
            physics.measure_idle()
            physics.start()
        outcome = executor.execute(worker_request, request.limits, progress)
    finally:
        if physics:
            series = physics.stop()
            physics.close()
    report = build_report(model, request, outcome.result, outcome.rss_samples)
    if physics:
        add_physics(report, physics, series, request.sustained_window_s)
    return report


def add_physics(report: dict, physics: RunPhysics, series: list, window_s: Optional[float]) -> None:
    measured, samples = report["timing"]["measured"], report["samples"]
    origin = measured["origin_monotonic_ns"]
    wall = samples["start_offset_ns"][-1] + samples["latency_ns"][-1]  # first start to last end
    report["physics"] = physics.summarize(series, origin, wall, measured["runs"])
    report["physics"]["settings"] = physics.settings.to_dict()
    if window_s:
        report["sustained"] = sustained_summary(report, relative(series, origin), physics.units, window_s)


def sustained_summary(report: dict, series: list, units: dict, window_s: float) -> dict:
    """Cold vs steady state: p90 of the first window against p90 over the last quarter of the run."""
    latency, offsets = report["samples"]["latency_ns"], report["samples"]["start_offset_ns"]
    windows = sustained_windows(latency, offsets, series, units, window_s)
    tail_start = offsets[-1] * 3 // 4
    tail = [lat for lat, off in zip(latency, offsets) if off >= tail_start]
    steady_p90 = stats.summarize(tail)["p90_ms"] if tail else None
    cold_p90 = windows[0]["p90_ms"] if windows else None
    return {
        "window_s": window_s,
        "windows": windows,
        "cold_p90_ms": cold_p90,
        "steady_p90_ms": steady_p90,
        "steady_vs_cold_p90": steady_p90 / cold_p90 if steady_p90 and cold_p90 else None,
        "time_to_first_throttle_s": report["physics"]["throttling"]["onset_s"],
    }
