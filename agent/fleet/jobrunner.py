"""Run one fleet job: ``python -m edgebench.agent.fleet.jobrunner JOB.json MODEL OUT.json``.

The daemon starts this in a child process of its own, so the daemon never imports numpy or a runtime (its idle
footprint stays small) and a job can be cancelled or timed out by killing one process group. The job goes through
the single-board engine (``edgebench.agent.bench.run``), which runs the model in yet another isolated child.
Progress goes to stdout as JSON lines; the outcome (``{"report": ...}`` or ``{"error": ..., "kind": ...}``) to
OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def build_request(job: dict, model_path: str, default_timeout_s: float = 3600.0):
    """A BenchRequest from a validated job: only names and numbers from the job reach the engine."""
    from ..bench import BenchRequest
    from ..isolation import ChildLimits
    from ..measure import RunSettings
    from ..physics import PhysicsSettings
    from ..runtimes.base import RuntimeOptions

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


def main(argv: list[str]) -> int:
    job_file, model_path, out_file = argv
    job = json.loads(Path(job_file).read_text())
    last = [0.0]

    def progress(phase: str, runs: int, elapsed: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:  # at most one progress line a second
            last[0] = now
            print(json.dumps({"phase": phase, "runs": runs, "elapsed_s": round(elapsed, 3)}), flush=True)

    from .. import bench
    from ..errors import EdgebenchError

    try:
        outcome = {"report": bench.run(build_request(job, model_path), progress)}
    except EdgebenchError as exc:
        outcome = {"error": str(exc), "kind": type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - reported to the fleet as the job's error, not a crash
        outcome = {"error": f"internal error: {type(exc).__name__}: {exc}", "kind": "InternalError"}
    tmp = Path(out_file + ".tmp")
    tmp.write_text(json.dumps(outcome, allow_nan=False, default=str))
    tmp.replace(out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
