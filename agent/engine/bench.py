"""`edgebench bench`: identify the model, run the protocol in isolated children (one per repeat), assemble the report.

This is the single-board engine that fleet jobs, gates and the native harness reuse: callers build a
BenchRequest and get back the report document (plain data, schema ``edgebench.bench/2``).

A run is ``repeats`` repeats of the same worker request, each in a fresh child process (a fresh model load, fresh
allocations): numbers that hold up when the run is repeated come from the spread between repeats
(``stats.interval``), not from one process's samples. Sensors are discovered and provenance collected once; the
board's sampler runs across the whole run; the cool-down rule (``--max-start-temp``) applies before every repeat.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator, Optional, Sequence

from edgebench.agent import __version__
from edgebench.agent.engine import generate, history, noise, ops, provenance, stats
from edgebench.agent.engine.executors import Executor, executor_for
from edgebench.agent.engine.isolation import ChildLimits, ChildOutcome, ProgressFn
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.physics import PhysicsSettings, RunPhysics, relative, sustained_windows
from edgebench.agent.engine.report import SCHEMA, utc_now
from edgebench.agent.errors import EdgebenchError, UsageError
from edgebench.agent.modelfile import ModelFile, identify
from edgebench.agent.runtimes import default_runtime
from edgebench.agent.runtimes.base import RuntimeOptions

MAX_REPEATS = 10_000


@dataclass
class BenchRequest:
    model: str
    runtime: Optional[str] = None  # None: chosen from the model's format
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    settings: RunSettings = field(default_factory=RunSettings)  # per repeat
    shape_args: Sequence[str] = ()  # --shape NAME=1x3x224x224, parsed in the child against the model
    input_args: Sequence[str] = ()  # --input NAME=file.npy | image | value | zeros/ones/random
    image_mean: Optional[Sequence[float]] = None  # --image-mean/--image-std for image inputs (None: model metadata)
    image_std: Optional[Sequence[float]] = None
    seed: int = 0
    limits: ChildLimits = field(default_factory=ChildLimits)  # per repeat (the timeout too)
    physics: Optional[PhysicsSettings] = None  # None: no sensors (temperature, clocks, power) sampled
    sustained_window_s: Optional[float] = None  # set for sustained runs: report latency per window
    repeats: int = 1  # fresh child processes running the same request, one after the other
    repeat_gap_s: float = 0.0  # sleep between repeats
    cpus: Optional[Sequence[int]] = None  # --cpus: the worker pins itself to these CPUs before it loads the model
    history_dir: Optional[str] = None  # this machine's run history (engine/history.py); None: not kept
    generation: Optional[generate.GenerationSettings] = None  # a language model's (None: the defaults for one)

    def validate(self) -> None:
        self.settings.validate()
        if not 1 <= self.repeats <= MAX_REPEATS:
            raise UsageError(f"--repeats must be from 1 to {MAX_REPEATS:,}")
        if self.repeat_gap_s < 0:
            raise UsageError("--repeat-gap must not be negative")
        if self.sustained_window_s and self.repeats > 1:
            raise UsageError("--sustained is one continuous measured phase: it runs with --repeats 1")
        if self.generation is not None:
            self.generation.validate()


def generates(runtime: str) -> bool:
    """Whether a runtime's benchmark is a generation (a language model's): one in names.GENERATES under any of its
    names, or a plugin (module:Class) subclassing one, which keeps its ``name`` (tests/llamacpp_plugins.py)."""
    from edgebench.agent.runtimes import names, runtime_class

    if ":" in runtime:
        return getattr(runtime_class(runtime), "name", None) in names.GENERATES
    return names.generates(runtime)


def runtime_for(request: BenchRequest, model: ModelFile) -> str:
    """The runtime asked for, else the one the model's format runs on."""
    return request.runtime or default_runtime(model.format)


def is_language_model(request: BenchRequest) -> bool:
    """Whether the request's model runs as a generation: read from its file's header and the runtime, before any
    work (a sweep of thread counts is refused for any other model)."""
    return generates(runtime_for(request, identify(request.model)))


def generation_settings(request: BenchRequest, runtime: str) -> Optional[dict]:
    """The worker's generation settings: a language model's runtime always generates (with the defaults unless
    given); any other is refused generation settings, and a language model is refused tensor inputs."""
    if not generates(runtime):
        if request.generation is not None:
            raise UsageError(f"--prompt-tokens, --gen-tokens and --prompt-file are for language models (GGUF); "
                             f"runtime {runtime} runs one inference at a time")
        return None
    if request.shape_args or request.input_args:
        raise UsageError("a language model's input is its prompt: --prompt-tokens N (and --prompt-file), not "
                         "--shape or --input")
    return (request.generation or generate.GenerationSettings()).to_dict()


def prepare(request: BenchRequest) -> tuple[ModelFile, dict, Executor]:
    """Check everything that can be checked without loading the model; return the model file, the worker
    request and the executor that will run it."""
    request.validate()
    model = identify(request.model)
    runtime = runtime_for(request, model)
    executor = executor_for(runtime)
    executor.check(model.format)
    if executor.name != "python":
        from edgebench.agent.engine import inputs

        inputs.refuse_images(request.input_args, f"--runtime {runtime}")  # the harness reads .npy, not pictures
    noise.check_cpus(request.cpus, runtime)
    worker_request = {
        "mode": "bench",
        "model": str(model.path),
        "runtime": runtime,
        "options": asdict(request.options),
        "settings": request.settings.to_dict(),
        "shape_args": list(request.shape_args),
        "input_args": list(request.input_args),
        "image_mean": list(request.image_mean) if request.image_mean else None,
        "image_std": list(request.image_std) if request.image_std else None,
        "seed": request.seed,
        "cpus": sorted(set(request.cpus)) if request.cpus else None,
        "generation": generation_settings(request, runtime),
    }
    return model, worker_request, executor


# ---------------------------------------------------------------- the run

def run(request: BenchRequest, progress: Optional[ProgressFn] = None) -> dict:
    model, worker_request, executor = prepare(request)
    physics: Optional[RunPhysics] = None
    series = None
    outcomes: list[ChildOutcome] = []
    waits: list[Optional[dict]] = []
    try:
        with executor.runner(worker_request, replace(request.limits, noise=True)) as runner:
            # Once per run, while the runner gets ready (the zygote imports the runtime): the sensors, provenance.
            physics = RunPhysics(request.physics) if request.physics else None
            device = provenance.collect(edgebench_version=__version__)
            runner.wait_ready()  # before the idle baseline: nothing of ours may be busy during it
            for index in range(request.repeats):
                with _naming_the_repeat(index, request.repeats):
                    if index and request.repeat_gap_s:
                        time.sleep(request.repeat_gap_s)
                    if physics:
                        physics.wait_until_cool(progress)
                        waits.append(physics.wait)
                        if not index:
                            physics.measure_idle()
                            physics.start()  # one sampler across every repeat, and the gaps between them
                    outcomes.append(runner.run(progress))
                    where_nodes_ran_once(runner)
    finally:
        if physics:
            series = physics.stop()
            physics.close()
    report = build_report(model, request, outcomes, device)
    if physics:
        add_physics(report, physics, series, request.sustained_window_s, waits)
    noise.add_to_report(report, [o.noise for o in outcomes], request.cpus)
    history.apply(report, request.history_dir)
    return report


@dataclass
class Interleaved:
    """One candidate of an interleaved run: its report, or why it has none (the others still ran)."""

    request: BenchRequest
    report: Optional[dict] = None
    error: Optional[EdgebenchError] = None


def run_interleaved(requests: Sequence[BenchRequest], progress: Optional[ProgressFn] = None,
                    seed: int = 0) -> list[Interleaved]:
    """Benchmark several candidates to be compared (the variants of a model, a reference and a candidate) with
    their repeats interleaved: slot by slot, one repeat of each, in a shuffled order per slot (seeded). Drift of
    the machine then hits every candidate alike, and repeat i of each ran side by side: a ratio between two of
    them can be paired (stats.ratio_interval). Every report carries ``interleave: {group, slot}`` (the slot is the
    run's; its units are paired by repeat index). The board's sensors (the first request's physics settings, if
    any) are sampled across the whole run, with the cool-down rule before each slot; each report gets its own
    repeats' energy. A candidate that fails keeps its error and drops out; the others go on."""
    import random
    import uuid

    slots = max(r.repeats for r in requests)
    order = random.Random(seed)
    group = uuid.uuid4().hex[:12]
    runs = [Interleaved(request) for request in requests]
    prepared: dict[int, tuple] = {}
    settings = next((r.physics for r in requests if r.physics), None)
    physics: Optional[RunPhysics] = None
    series: list = []
    with contextlib.ExitStack() as stack:
        for index, item in enumerate(runs):
            try:
                model, worker_request, executor = prepare(item.request)
                runner = stack.enter_context(executor.runner(worker_request, replace(item.request.limits, noise=True)))
                prepared[index] = (model, runner, [])
            except EdgebenchError as exc:
                item.error = exc
        physics = RunPhysics(settings) if settings else None
        device = provenance.collect(edgebench_version=__version__)
        for _, runner, _ in prepared.values():
            runner.wait_ready()
        try:
            for slot in range(slots):
                if physics:
                    physics.wait_until_cool(progress)
                    if not slot:
                        physics.measure_idle()
                        physics.start()
                live = [i for i in prepared if runs[i].error is None and slot < runs[i].request.repeats]
                order.shuffle(live)
                for index in live:
                    with contextlib.suppress(EdgebenchError), _keeping_error(runs[index], slot, slots):
                        prepared[index][2].append(prepared[index][1].run(progress))
                        where_nodes_ran_once(prepared[index][1])
        finally:
            if physics:
                series = physics.stop()
                physics.close()
    for index, (model, _, outcomes) in prepared.items():
        item = runs[index]
        if item.error is None:
            item.report = build_report(model, item.request, outcomes, device)
            item.report["interleave"] = {"group": group, "slot": 0}
            if physics:
                add_physics(item.report, physics, series, None)
            noise.add_to_report(item.report, [o.noise for o in outcomes], item.request.cpus)
            history.apply(item.report, item.request.history_dir)
    return runs


def speedup(reference: dict, candidate: dict, metric: str = "p50_ms") -> dict:
    """reference / candidate of the metric (above 1: the candidate is faster), from the units' values; paired by
    repeat when the two were interleaved."""
    ref, cand = reference["stats"]["interval"][metric], candidate["stats"]["interval"][metric]
    paired = (reference.get("interleave") or {}).get("group") == (candidate.get("interleave") or {}).get("group") \
        and reference.get("interleave") is not None
    ratio = stats.ratio_interval(cand["per_unit"], ref["per_unit"], paired=paired)
    if ratio is None:
        return {"metric": metric, "estimate": ref["estimate"] / cand["estimate"], "ci": None, "method": None}
    return {"metric": metric, "estimate": ratio["ratio"], "ci": ratio["ci"], "method": ratio["method"]}


def where_nodes_ran_once(runner) -> None:
    """Placement is read in a run's first repeat only: it is the model's and the options', not the process's, and
    ONNX Runtime reads it through a second, profiled session (a load and an inference more per repeat)."""
    runner.worker_request["placement"] = False


@contextlib.contextmanager
def _keeping_error(item: Interleaved, index: int, repeats: int) -> Iterator[None]:
    try:
        with _naming_the_repeat(index, repeats):
            yield
    except EdgebenchError as exc:
        item.error = exc
        raise


@contextlib.contextmanager
def _naming_the_repeat(index: int, repeats: int) -> Iterator[None]:
    """An error after the first repeat says which: ``repeat 3 of 5: the runtime crashed...`` (one in the first is
    the run's, worded as for a single run: a bad input or model fails there)."""
    try:
        yield
    except EdgebenchError as exc:
        if index == 0:
            raise
        raise type(exc)(f"repeat {index + 1} of {repeats}: {exc}") from exc


# ---------------------------------------------------------------- the report

def _memory_section(child_memory: dict, rss_samples: list, windows: list, origin_ns: int) -> dict:
    """The child's own checkpoints plus the parent's RSS samples, aligned to the first measured run;
    ``windows``: the measured phases, (start, end) in monotonic ns."""
    aligned = [[t - origin_ns, rss] for t, rss in rss_samples]
    steady = [rss for t, rss in rss_samples if any(start <= t <= end for start, end in windows)]
    section = dict(child_memory)
    section["rss_samples"] = aligned  # [offset from the first measured run (ns), bytes]
    section["peak_sampled_bytes"] = max((rss for _, rss in aligned), default=None)
    section["peak_steady_sampled_bytes"] = max(steady, default=None)
    if section.get("peak_steady_bytes") is None:  # no VmHWM reset here: fall back to the samples
        section["peak_steady_bytes"] = section["peak_steady_sampled_bytes"]
        if steady:
            section["peak_method"] = "sampled"
    return section


def _largest(values: list) -> Optional[int]:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _pooled_memory(results: list[dict]) -> dict:
    """The memory checkpoints over the repeats: each the largest any repeat showed (each repeat's own are in
    ``repeats[i].memory``)."""
    if len(results) == 1:
        return dict(results[0]["memory"])
    memories = [r["memory"] for r in results]
    pooled = {key: _largest([m.get(key) for m in memories]) for key in memories[0] if key != "peak_method"}
    methods = {m.get("peak_method") for m in memories}
    pooled["peak_method"] = methods.pop() if len(methods) == 1 else memories[0].get("peak_method")
    return pooled


def _pooled_timing(results: list[dict]) -> dict:
    """Load and first inference: the median over the repeats; warm-up and measured phase: their totals; the
    origin: the first repeat's (every offset in the report counts from it)."""
    if len(results) == 1:
        return results[0]["timing"]
    timings = [r["timing"] for r in results]
    measured = [t["measured"] for t in timings]
    return {
        "load_ms": statistics.median(t["load_ms"] for t in timings),
        "first_inference_ms": statistics.median(t["first_inference_ms"] for t in timings),
        "warmup": {"runs": sum(t["warmup"]["runs"] for t in timings),
                   "duration_s": sum(t["warmup"]["duration_s"] for t in timings)},
        "measured": {"runs": sum(m["runs"] for m in measured), "duration_s": sum(m["duration_s"] for m in measured),
                     "reached_min_runs": all(m["reached_min_runs"] for m in measured),
                     "reached_min_duration": all(m["reached_min_duration"] for m in measured),
                     "origin_monotonic_ns": measured[0]["origin_monotonic_ns"]},
    }


def measured_window(result: dict) -> tuple[int, int]:
    """A repeat's measured phase on the monotonic clock: from its first run's start, as long as the phase lasted."""
    origin = result["timing"]["measured"]["origin_monotonic_ns"]
    return origin, origin + result["wall_ns"]


def _repeat_entry(index: int, outcome: ChildOutcome) -> dict:
    result = outcome.result
    start, end = measured_window(result)
    memory = _memory_section(result["memory"], outcome.rss_samples, [(start, end)], start)
    del memory["rss_samples"]  # in the report's memory section, with every repeat's
    entry = {
        "index": index,
        "pid": outcome.pid,
        "timing": result["timing"],
        "memory": memory,
        "stats": stats.summarize(result["samples"]["latency_ns"], result["wall_ns"]),
        "samples": result["samples"],  # offsets from this repeat's first measured run
        "origin_monotonic_ns": start,
    }
    if "generation" in result:  # a language model: its prefill's window too (the prefill's energy, add_physics)
        entry["prefill_monotonic_ns"] = generate.prefill_window(result)
    return entry


def build_report(model: ModelFile, request: BenchRequest, outcomes: list[ChildOutcome],
                 device: Optional[dict] = None) -> dict:
    results = [o.result for o in outcomes]
    origin = results[0]["timing"]["measured"]["origin_monotonic_ns"]
    latency: list = []
    offsets: list = []
    repeat_of: list = []
    for index, result in enumerate(results):
        shift = result["timing"]["measured"]["origin_monotonic_ns"] - origin
        latency += result["samples"]["latency_ns"]
        offsets += [offset + shift for offset in result["samples"]["start_offset_ns"]]
        repeat_of += [index] * len(result["samples"]["latency_ns"])
    timing = _pooled_timing(results)
    measured = timing["measured"]
    summary = stats.summarize(latency, sum(r["wall_ns"] for r in results))
    summary["interval"] = stats.interval_summary([r["samples"]["latency_ns"] for r in results], summary["ci_level"])
    first = results[0]
    raw_placement, placement_note = ops.pooled_placement([r.get("placement") for r in results])
    placement = ops.summarize_placement(raw_placement)
    if placement is not None:
        placement["note"] = placement_note
    report = {
        "schema": SCHEMA,
        "created": utc_now(),
        "model": {**model.to_dict(), "inputs": first["inputs"], "outputs": first["outputs"]},
        "runtime": first["backend"],
        "inputs_fed": first["feeds"],
        "settings": {**request.settings.to_dict(), "seed": request.seed, "repeats": request.repeats,
                     "repeat_gap_s": request.repeat_gap_s},
        "timing": timing,
        "stats": summary,
        "validity": stats.verdict(summary, measured["reached_min_runs"], measured["reached_min_duration"]),
        "memory": _memory_section(_pooled_memory(results), [s for o in outcomes for s in o.rss_samples],
                                  [measured_window(r) for r in results], origin),
        "samples": {"latency_ns": latency, "start_offset_ns": offsets, "repeat": repeat_of},
        "repeats": [_repeat_entry(index, outcome) for index, outcome in enumerate(outcomes)],
        "device": device if device is not None else provenance.collect(edgebench_version=__version__),
        "placement": placement,
        "weights": weights_section(model),
    }
    profiled = ops.summarize_ops([r.get("ops") for r in results], summary["p50_ms"])
    if profiled is not None:
        report["ops"] = profiled
    if "generation" in first:
        report["generation"] = generate.pooled(results, summary)
        report["settings"]["generation"] = request.generation.to_dict() if request.generation else \
            generate.GenerationSettings().to_dict()
    return report


def weights_section(model: ModelFile) -> dict:
    """The model's weight sparsity (engine/weights.py), read here in the parent from the file; for TFLite, whether
    XNNPACK could use sparse kernels for it on this CPU. ``{"unavailable": why}`` where this machine cannot read the
    format's weights or the file's weights cannot be parsed: the benchmark itself stands."""
    from edgebench.agent.engine import weights
    from edgebench.agent.modelfile import TFLITE

    reason = weights.unavailable_reason(model.format)
    if reason:
        return {"unavailable": reason}
    try:
        refs = weights.read_weights(model.path, model.format)
    except EdgebenchError as exc:
        return {"unavailable": str(exc)}
    section = weights.summarize(refs, model.format)
    if model.format == TFLITE:
        section["xnnpack_sparse"] = weights.xnnpack_sparse_outlook(refs)
    return section


def add_physics(report: dict, physics: RunPhysics, series: list, window_s: Optional[float],
                waits: Sequence[Optional[dict]] = ()) -> None:
    """The board's state over the run: statistics and energy over the measured phases of all repeats (and per
    repeat, in ``repeats[i].physics``), throttling from the first repeat's origin, the raw series."""
    measured = report["timing"]["measured"]
    origin = measured["origin_monotonic_ns"]
    windows = [(r["origin_monotonic_ns"], r["origin_monotonic_ns"] + r["samples"]["start_offset_ns"][-1]
                + r["samples"]["latency_ns"][-1], r["timing"]["measured"]["runs"]) for r in report["repeats"]]
    report["physics"] = physics.summarize(series, origin, windows[-1][1] - origin, measured["runs"], windows)
    report["physics"]["settings"] = physics.settings.to_dict()
    if waits:
        report["physics"]["wait"] = waits[0]
    for index, entry in enumerate(report["repeats"]):
        start, end, runs = windows[index]
        entry["physics"] = {"wait": waits[index] if index < len(waits) else None,
                            "energy": physics.energy(series, [(start, end, runs)])}
    if window_s:
        report["sustained"] = sustained_summary(report, relative(series, origin), physics.units, window_s)
    generate.add_energy(report, physics, series)


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
