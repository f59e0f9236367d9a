"""Run one fleet job: ``python -m edgebench.agent.fleet.jobrunner JOB.json MODEL EVENTS_FD [REFERENCE]``
(JOB.json: one job, or ``{"jobs": [...]}``: jobs of one model run with their repeats interleaved).

The daemon starts this through the engine's one child supervisor (``isolation.run_child``), so the daemon never
imports numpy or a runtime (its idle footprint stays small) and a job is cancelled or timed out by killing one
process group. The job goes through the single-board engine (``edgebench.agent.engine.bench.run``), which runs the
model in yet another isolated child. It speaks the worker's events on EVENTS_FD (engine/worker.py): progress, then
one ``result`` or one ``error`` (``kind``, ``message``); nothing goes to disk. The daemon sends ``{"jobs": [...]}``
(one job, or the jobs of one model from one push, whose repeats then alternate: bench.run_interleaved) and gets
``{"group": [{job_id, report, drift} or {job_id, error, kind}]}``; a bare job gets ``{"report", "drift"}``.
With a REFERENCE model (the job's ``reference``), the result also has ``drift``: the model's output drift against
the reference on the job's inputs (edgebench.agent.optimize.compare), or ``{"error": ...}`` when it cannot be
measured; the benchmark's report is kept either way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

from edgebench.agent.fleet.protocol import DEFAULT_JOB_TIMEOUT_S, Job

DRIFT_TIMEOUT_S = 600.0  # measuring drift (two models, 8 input sets) is short; a job's own timeout bounds it too


def build_request(job: Job, model_path: str, default_timeout_s: Optional[float] = None,
                  history_dir: Optional[str] = None, sensors_root: Optional[str] = None):
    """A BenchRequest from a validated job: only names and numbers from the job reach the engine. ``history_dir``:
    the board's run history (agent/engine/history.py: the agent's DATA_DIR/history), which widens a result's
    rerun interval and tells release gates how much this configuration's runs differ on this board. A language
    model's job without generation settings gets the engine's defaults (the same as ``edgebench bench``)."""
    from edgebench.agent.engine.bench import BenchRequest
    from edgebench.agent.engine.generate import GenerationSettings
    from edgebench.agent.engine.isolation import ChildLimits
    from edgebench.agent.engine.measure import RunSettings
    from edgebench.agent.engine.physics import PhysicsSettings

    settings = RunSettings(**{k: int(v) if k.endswith("_runs") else float(v) for k, v in job.settings.items()})
    settings.validate()
    timeout = job.timeout_s or default_timeout_s or DEFAULT_JOB_TIMEOUT_S
    physics = PhysicsSettings(idle_s=0.0, root=sensors_root or "/") if job.sensors else None
    return BenchRequest(model=model_path, runtime=job.runtime, options=runtime_options(job), settings=settings,
                        shape_args=list(job.shape), input_args=list(job.input), seed=int(job.seed),
                        limits=ChildLimits(timeout_s=timeout), physics=physics,
                        cpus=[int(cpu) for cpu in job.cpus] or None, repeats=int(job.repeats),
                        history_dir=history_dir,
                        generation=GenerationSettings(**{k: int(v) for k, v in job.generation.items()})
                        if job.generation else None)


def runtime_options(job: Job, delegates: bool = True):
    from edgebench.agent.runtimes.base import RuntimeOptions

    return RuntimeOptions(threads=int(job.threads) if job.threads else None,
                          delegates=list(job.delegates) if delegates else [],
                          providers=list(job.providers), delegate_options={})


def measure_drift(job: Job, model_path: str, reference_path: str, timeout_s: float) -> dict:
    """Drift of the job's model against its reference on ``DRIFT_SAMPLES`` generated input sets, with the compare
    machinery (both models run in isolated children): ``{max_abs_err, mean_abs_err, cosine_mean, top1_agreement,
    samples, reference_sha}``, or ``{error, reference_sha}``."""
    from edgebench.agent.engine.isolation import ChildLimits
    from edgebench.agent.errors import EdgebenchError
    from edgebench.agent.fleet.protocol import DRIFT_NUMBERS, DRIFT_SAMPLES
    from edgebench.agent.optimize import compare

    sha = str(job.reference)
    options = runtime_options(job, delegates=False)
    # the reference runs with its own runtime's defaults: the job's providers may not be its runtime's chain
    reference = dataclasses.replace(options, providers=[])
    limits = ChildLimits(timeout_s=timeout_s, rss_interval_s=None)
    comparison = compare.Comparison(compare.ModelRun(reference_path, None, reference),
                                    compare.ModelRun(model_path, job.runtime, options), limits)
    try:
        drift = comparison.run_generated(list(job.shape), list(job.input), DRIFT_SAMPLES, int(job.seed))["drift"]
    except EdgebenchError as exc:
        return {"error": str(exc)[:2000], "reference_sha": sha}
    except Exception as exc:  # noqa: BLE001 - a drift failure must not lose the benchmark's result
        return {"error": f"internal error: {type(exc).__name__}: {exc}"[:2000], "reference_sha": sha}
    result = {key: drift[key] for key in DRIFT_NUMBERS if drift.get(key) is not None}
    if not all(math.isfinite(v) for v in result.values()):  # NaN or infinite outputs
        return {"error": "the outputs are not finite numbers", "reference_sha": sha}
    return {**result, "reference_sha": sha}


def drift_of(job: Job, model_path: str, reference_path: Optional[str], events) -> dict:
    if not (reference_path and job.reference):
        return {}
    events.send({"type": "phase", "phase": "drift"})
    return {"drift": measure_drift(job, model_path, reference_path,
                                   min(float(job.timeout_s or DRIFT_TIMEOUT_S), DRIFT_TIMEOUT_S))}


def run_group(jobs: list[Job], model_path: str, reference_path: Optional[str], progress, events,
              history_dir: Optional[str] = None, sensors_root: Optional[str] = None) -> list[dict]:
    """Jobs of one model (several runtimes, delegate chains, thread counts) with their repeats interleaved
    (bench.run_interleaved): one entry per job, its report (and drift) or its error."""
    from edgebench.agent.engine import bench

    if len(jobs) == 1:  # one job: the plain run (sustained runs and the rest of bench.run's options)
        job = jobs[0]
        report = bench.run(build_request(job, model_path, history_dir=history_dir, sensors_root=sensors_root),
                           progress)
        return [{"job_id": job.job_id, "report": report, **drift_of(job, model_path, reference_path, events)}]
    runs = bench.run_interleaved([build_request(job, model_path, history_dir=history_dir,
                                                sensors_root=sensors_root) for job in jobs], progress,
                                 seed=jobs[0].seed)
    entries = []
    for job, run in zip(jobs, runs):
        if run.error is not None:
            entries.append({"job_id": job.job_id, "error": str(run.error), "kind": type(run.error).__name__})
        else:
            entries.append({"job_id": job.job_id, "report": run.report,
                            **drift_of(job, model_path, reference_path, events)})
    return entries


def main(argv: list[str]) -> int:
    from edgebench.agent.engine import bench
    from edgebench.agent.engine.worker import Events
    from edgebench.agent.errors import EdgebenchError

    job_file, model_path, events_fd = argv[:3]
    reference_path = argv[3] if len(argv) > 3 else None
    events = Events(int(events_fd))
    spec = json.loads(Path(job_file).read_text())
    last = [0.0]

    def progress(phase: str, runs: int, elapsed: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:  # at most one progress event a second
            last[0] = now
            events.progress(phase, runs, elapsed)

    try:
        if "jobs" in spec:  # the daemon's: one job, or jobs of one model whose repeats alternate
            outcome = {"group": run_group([Job.from_payload(j) for j in spec["jobs"]], model_path, reference_path,
                                          progress, events, spec.get("history_dir"), spec.get("sensors_root"))}
        else:
            job = Job.from_payload(spec)
            outcome = {"report": bench.run(build_request(job, model_path), progress)}
            outcome.update(drift_of(job, model_path, reference_path, events))
    except EdgebenchError as exc:
        events.send({"type": "error", "kind": type(exc).__name__, "message": str(exc)})
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - reported to the fleet as the job's error, not a crash
        events.send({"type": "error", "kind": "InternalError", "message": f"internal error: {type(exc).__name__}: "
                                                                          f"{exc}"})
        return 1
    events.send({"type": "result", "result": outcome})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
