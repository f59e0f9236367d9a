"""Run one fleet job: ``python -m edgebench.agent.fleet.jobrunner JOB.json MODEL OUT.json [REFERENCE]``.

The daemon starts this in a child process of its own, so the daemon never imports numpy or a runtime (its idle
footprint stays small) and a job can be cancelled or timed out by killing one process group. The job goes through
the single-board engine (``edgebench.agent.engine.bench.run``), which runs the model in yet another isolated child.
Progress goes to stdout as JSON lines; the outcome (``{"report": ...}`` or ``{"error": ..., "kind": ...}``) to
OUT.json; when OUT.json cannot be written (a full disk), a last stdout line ``{"failure": ..., "errno": ...}`` and
exit status 1 instead. With a REFERENCE model (the job's ``reference``), the outcome also has ``drift``: the model's
output drift against the reference on the job's inputs (edgebench.agent.optimize.compare), or ``{"error": ...}`` when it
cannot be measured; the benchmark's report is kept either way.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


def build_request(job: dict, model_path: str, default_timeout_s: float = 3600.0):
    """A BenchRequest from a validated job: only names and numbers from the job reach the engine."""
    from edgebench.agent.engine.bench import BenchRequest
    from edgebench.agent.engine.isolation import ChildLimits
    from edgebench.agent.engine.measure import RunSettings
    from edgebench.agent.engine.physics import PhysicsSettings
    from edgebench.agent.runtimes.base import RuntimeOptions

    settings = RunSettings(**{k: int(v) if k.endswith("_runs") else float(v)
                              for k, v in (job.get("settings") or {}).items()})
    settings.validate()
    options = RuntimeOptions(threads=int(job["threads"]) if job.get("threads") else None,
                             delegates=list(job.get("delegates") or []),
                             providers=list(job.get("providers") or []), delegate_options={})
    timeout = job.get("timeout_s") or default_timeout_s
    physics = PhysicsSettings(idle_s=0.0) if job.get("sensors", True) else None
    return BenchRequest(model=model_path, runtime=job.get("runtime"), options=options, settings=settings,
                        shape_args=list(job.get("shape") or []), input_args=list(job.get("input") or []),
                        seed=int(job.get("seed") or 0), limits=ChildLimits(timeout_s=timeout), physics=physics)


def measure_drift(job: dict, model_path: str, reference_path: str, timeout_s: float) -> dict:
    """Drift of the job's model against its reference on ``DRIFT_SAMPLES`` generated input sets, with the compare
    machinery (both models run in isolated children): ``{max_abs_err, mean_abs_err, cosine_mean, top1_agreement,
    samples, reference_sha}``, or ``{error, reference_sha}``."""
    from edgebench.agent.engine.isolation import ChildLimits
    from edgebench.agent.errors import EdgebenchError
    from edgebench.agent.fleet.protocol import DRIFT_NUMBERS, DRIFT_SAMPLES
    from edgebench.agent.optimize import compare
    from edgebench.agent.runtimes.base import RuntimeOptions

    sha = str(job.get("reference"))
    options = RuntimeOptions(threads=int(job["threads"]) if job.get("threads") else None,
                             providers=list(job.get("providers") or []))
    limits = ChildLimits(timeout_s=timeout_s, rss_interval_s=None)
    comparison = compare.Comparison(compare.ModelRun(reference_path, None, options),
                                    compare.ModelRun(model_path, job.get("runtime"), options), limits)
    try:
        drift = comparison.run_generated(list(job.get("shape") or []), list(job.get("input") or []),
                                         DRIFT_SAMPLES, int(job.get("seed") or 0))["drift"]
    except EdgebenchError as exc:
        return {"error": str(exc)[:2000], "reference_sha": sha}
    except Exception as exc:  # noqa: BLE001 - a drift failure must not lose the benchmark's result
        return {"error": f"internal error: {type(exc).__name__}: {exc}"[:2000], "reference_sha": sha}
    result = {key: drift[key] for key in DRIFT_NUMBERS if drift.get(key) is not None}
    if not all(math.isfinite(v) for v in result.values()):  # NaN or infinite outputs
        return {"error": "the outputs are not finite numbers", "reference_sha": sha}
    return {**result, "reference_sha": sha}


def main(argv: list[str]) -> int:
    job_file, model_path, out_file = argv[:3]
    reference_path = argv[3] if len(argv) > 3 else None
    job = json.loads(Path(job_file).read_text())
    last = [0.0]

    def progress(phase: str, runs: int, elapsed: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:  # at most one progress line a second
            last[0] = now
            print(json.dumps({"phase": phase, "runs": runs, "elapsed_s": round(elapsed, 3)}), flush=True)

    from edgebench.agent.engine import bench
    from edgebench.agent.errors import EdgebenchError

    try:
        outcome = {"report": bench.run(build_request(job, model_path), progress)}
        if reference_path and job.get("reference"):
            print(json.dumps({"phase": "drift", "runs": 0, "elapsed_s": 0.0}), flush=True)
            outcome["drift"] = measure_drift(job, model_path, reference_path,
                                             min(float(job.get("timeout_s") or 600.0), 600.0))
    except EdgebenchError as exc:
        outcome = {"error": str(exc), "kind": type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - reported to the fleet as the job's error, not a crash
        outcome = {"error": f"internal error: {type(exc).__name__}: {exc}", "kind": "InternalError"}
    tmp = Path(out_file + ".tmp")
    try:
        tmp.write_text(json.dumps(outcome, allow_nan=False, default=str))
        tmp.replace(out_file)
    except OSError as exc:  # a full disk: say so on stdout (a pipe to the daemon), which fails the job with it
        tmp.unlink(missing_ok=True)
        print(json.dumps({"failure": f"the job could not write its outcome: {exc.strerror or exc}",
                          "errno": exc.errno}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
