"""`edgebench bench`: identify the model, run the protocol in an isolated child, assemble the report.

This is the single-board engine that fleet jobs, gates and the native harness reuse: callers build a
BenchRequest and get back the report document (plain data, schema ``edgebench.bench/1``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from . import __version__, provenance, stats
from .isolation import ChildLimits, ProgressFn, run_isolated
from .measure import RunSettings
from .modelfile import ModelFile, identify
from .report import SCHEMA, utc_now
from .runtimes import DEFAULT_FOR_FORMAT, choose_runtime, runtime_class
from .runtimes.base import RuntimeOptions


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


def prepare(request: BenchRequest) -> tuple[ModelFile, dict]:
    """Check everything that can be checked without loading the model; return the worker request."""
    request.settings.validate()
    model = identify(request.model)
    runtime = request.runtime or DEFAULT_FOR_FORMAT[model.format]
    choose_runtime(model.format, runtime)
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
    return model, worker_request


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
    model, worker_request = prepare(request)
    runtime = runtime_class(worker_request["runtime"])
    # Out-of-process runtimes (the native harness) run the whole protocol in their own child process and
    # return the worker's result shape; Python runtimes run inside the worker.
    execute = getattr(runtime, "execute", None) or run_isolated
    outcome = execute(worker_request, request.limits, progress)
    return build_report(model, request, outcome.result, outcome.rss_samples)
