"""The measurement protocol (LoadGen-style): this module owns timing, phases and run-length rules.

Phases: model load, first inference, warm-up (until both a run count and a duration are met), then the
measured phase (until both ``min_runs`` and ``min_duration`` are met, capped by ``max_duration``). Every
iteration is timed with perf_counter_ns around the runtime's bare inference callable and nothing else.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

from edgebench.agent.engine import memory
from edgebench.agent.errors import ChildFailed, EdgebenchError, InferenceError
from edgebench.agent.runtimes.base import Session

ProgressFn = Callable[[str, int, float], None]  # (phase, runs so far, seconds elapsed)


@dataclass
class RunSettings:
    min_runs: int = 400  # enough for a 95% interval around p99 (stats.min_samples)
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    warmup_runs: int = 5
    warmup_duration_s: float = 0.5
    progress_interval_s: float = 0.5
    profile_runs: int = 0  # --profile-ops: inferences under the runtime's per-op profiler, after the measured phase

    def validate(self) -> None:
        from edgebench.agent.errors import UsageError

        if self.profile_runs < 0:
            raise UsageError("--profile-runs must be at least 1")
        if self.min_runs < 1 or self.warmup_runs < 0:
            raise UsageError("--min-runs must be at least 1 and --warmup-runs at least 0")
        if min(self.min_duration_s, self.warmup_duration_s) < 0 or self.max_duration_s <= 0:
            raise UsageError("durations must be non-negative and --max-duration positive")
        if self.max_duration_s < self.min_duration_s:
            raise UsageError(f"--max-duration ({self.max_duration_s:g}s) is shorter than --min-duration "
                             f"({self.min_duration_s:g}s)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Phase:
    start_ns: Sequence[int]  # perf_counter_ns at each iteration's start
    latency_ns: Sequence[int]
    wall_ns: int  # the phase's start to the last run's end (what the duration rule counts)
    reached_min_runs: bool
    reached_min_duration: bool


def run_loop(run: Callable[[], Any], min_runs: int, min_duration_s: float, max_duration_s: float,
             phase: str = "measure", progress: Optional[ProgressFn] = None,
             progress_interval_s: float = 0.5) -> Phase:
    """Call ``run`` until both minimums are met or ``max_duration_s`` passes; time each call."""
    clock = time.perf_counter_ns
    # Typed arrays: 8 bytes a sample instead of a Python int object each, so a long run of a fast model
    # does not inflate the RSS it is measuring.
    starts = array("q")
    latencies = array("q")
    add_start, add_latency = starts.append, latencies.append
    min_ns, max_ns = int(min_duration_s * 1e9), int(max_duration_s * 1e9)
    interval_ns = int(progress_interval_s * 1e9)
    begin = clock()
    next_report = begin + interval_ns
    deadline = begin + max_ns
    count = 0
    end = begin
    while count < min_runs or end - begin < min_ns:
        if count and end >= deadline:
            break
        t0 = clock()
        run()
        end = clock()
        add_start(t0)
        add_latency(end - t0)
        count += 1
        if progress is not None and end >= next_report:
            progress(phase, count, (end - begin) / 1e9)
            next_report = end + interval_ns
    return Phase(starts, latencies, end - begin, count >= min_runs, end - begin >= min_ns)


def _guarded(action: Callable[[], Any], what: str) -> Any:
    try:
        return action()
    except EdgebenchError:
        raise
    except MemoryError:
        raise ChildFailed(f"the runtime ran out of memory in {what}") from None
    except Exception as exc:  # the runtime's own exception types: report them in one line
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise InferenceError(f"{what} failed: {first}") from None


PROFILE_WARMUP_RUNS = 3


def profile_ops(session: Session, feeds: dict, settings: RunSettings, progress: Optional[ProgressFn]) -> dict:
    """``settings.profile_runs`` inferences under the runtime's own per-op profiler, after the measured phase (so
    the profiler's cost never touches the measured samples), each timed end to end like a measured one: the
    report sets their time against the measured phase's (what profiling costs) and the nodes' sum against it."""
    profiler = session.op_profiler()
    if isinstance(profiler, str):
        return {"source": None, "unavailable": profiler, "latency_ns": [], "nodes": []}
    try:
        run = profiler.bind(feeds)
        _guarded(lambda: run_loop(run, PROFILE_WARMUP_RUNS, 0.0, settings.max_duration_s), "the profiled warm-up")
        if progress:
            progress("profile", 0, 0.0)
        profiled = _guarded(lambda: run_loop(run, settings.profile_runs, 0.0, settings.max_duration_s, "profile",
                                             progress, settings.progress_interval_s), "the profiled runs")
        runs = len(profiled.latency_ns)
        nodes = _guarded(lambda: profiler.collect(runs), "reading the per-op profile")
    finally:
        profiler.close()
    return {"source": profiler.source, "unavailable": None, "latency_ns": profiled.latency_ns.tolist(),
            "nodes": nodes}


def benchmark(load: Callable[[], Session], make_feeds: Callable[[Session], dict], settings: RunSettings,
              progress: Optional[ProgressFn] = None, on_loaded: Optional[Callable[[Session, dict], None]] = None,
              on_phase: Optional[Callable[[str], None]] = None, placement: bool = True) -> dict:
    """Run the whole protocol; return timings, raw samples and memory checkpoints (plain data). ``on_phase`` is
    told ``measure`` just before the measured loop and ``measured`` just after it (the supervisor reads the noise
    counters there: engine/noise.py), outside every timed region, like the native harness's phase events."""
    clock = time.perf_counter_ns
    session, load_ns, rss_before_load, rss_after_load = timed_load(load, progress)
    feeds = make_feeds(session)
    if on_loaded:
        on_loaded(session, feeds)
    run = session.bind(feeds)
    t0 = clock()
    _guarded(run, "the first inference")
    first_ns = clock() - t0
    if progress:
        progress("warmup", 1, 0.0)
    warmup = _guarded(lambda: run_loop(run, settings.warmup_runs, settings.warmup_duration_s,
                                       settings.max_duration_s, "warmup", progress,
                                       settings.progress_interval_s), "warm-up")
    load_peak = memory.peak_rss()
    can_reset = memory.reset_peak()
    rss_before_measure = memory.current_rss()
    if on_phase:
        on_phase("measure")
    measured = _guarded(lambda: run_loop(run, settings.min_runs, settings.min_duration_s,
                                         settings.max_duration_s, "measure", progress,
                                         settings.progress_interval_s), "the measured run")
    if on_phase:
        on_phase("measured")
    steady_peak = memory.peak_rss() if can_reset else None
    origin = measured.start_ns[0]
    placed = _guarded(lambda: session.placement(feeds), "reading where the nodes ran") if placement else None
    ops = profile_ops(session, feeds, settings, progress) if settings.profile_runs else None
    return {
        "session": session,
        "feeds": feeds,
        "placement": placed.to_dict() if placed else None,
        "ops": ops,
        "timing": {
            "load_ms": load_ns / 1e6,
            "first_inference_ms": first_ns / 1e6,
            "warmup": {"runs": len(warmup.latency_ns), "duration_s": warmup.wall_ns / 1e9},
            "measured": {"runs": len(measured.latency_ns), "duration_s": measured.wall_ns / 1e9,
                         "reached_min_runs": measured.reached_min_runs,
                         "reached_min_duration": measured.reached_min_duration,
                         "origin_monotonic_ns": origin},
        },
        "samples": {
            "latency_ns": measured.latency_ns.tolist(),
            "start_offset_ns": [s - origin for s in measured.start_ns],
        },
        "wall_ns": measured.wall_ns,
        "memory": memory_checkpoints(rss_before_load, rss_after_load, load_peak, rss_before_measure, steady_peak,
                                     can_reset),
    }


def timed_load(load: Callable[[], Session], progress: Optional[ProgressFn]) -> tuple[Session, int, int, int]:
    """The model loaded and its load timed: (session, load ns, RSS before, RSS after)."""
    rss_before = memory.current_rss()
    if progress:
        progress("load", 0, 0.0)
    t0 = time.perf_counter_ns()
    session = load()
    load_ns = time.perf_counter_ns() - t0
    return session, load_ns, rss_before, memory.current_rss()


def memory_checkpoints(before_load: Optional[int], after_load: Optional[int], load_peak: Optional[int],
                       before_measure: Optional[int], steady_peak: Optional[int], can_reset: bool) -> dict:
    """The result's ``memory``: RSS around the load, the peak of load and warm-up, the measured phase's own."""
    return {
        "rss_before_load_bytes": before_load,
        "rss_after_load_bytes": after_load,
        "peak_load_bytes": load_peak,  # load, first inference and warm-up
        "rss_before_measure_bytes": before_measure,
        "peak_steady_bytes": steady_peak,  # the measured phase alone
        "peak_method": "vmhwm" if can_reset else ("vmhwm-lifetime" if load_peak else None),
    }
