"""The engineers' commands: `edgebench push`, `edgebench devices`, `edgebench jobs` (HTTP client of the collector)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

from edgebench.agent.engine.report import emit_json
from edgebench.agent.errors import EdgebenchError, ModelError, UsageError

FINAL = ("done", "failed", "cancelled", "rejected")


class ServerError(EdgebenchError):
    """The collector refused a request or cannot be reached."""


def request(server: str, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json",
            timeout: float = 60.0) -> Any:
    url = server.rstrip("/") + path
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error")
        except ValueError:
            detail = exc.reason
        raise ServerError(f"{method} {path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"cannot reach the collector at {server}: {getattr(exc, 'reason', exc)}") from None


def upload(server: str, path: Path) -> dict:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    query = urllib.parse.urlencode({"name": path.name})
    return request(server, "POST", f"/api/v1/models?{query}", data, "application/octet-stream", timeout=600)


def device_selector(text: str) -> dict:
    text = text.strip()
    if not text or text == "all":
        return {"all": True}
    if "=" in text:
        from edgebench.agent.fleet.protocol import ProtocolError, parse_labels

        try:
            return {"labels": parse_labels(text)}
        except ProtocolError as exc:
            raise UsageError(f"--devices: {exc}") from None
    return {"ids": [part.strip() for part in text.split(",") if part.strip()]}


def job_matrix(args: argparse.Namespace, shas: list[str]) -> dict:
    if args.memory_limit:
        raise UsageError("--memory-limit is not available for fleet jobs")
    settings = {"min_runs": args.min_runs, "min_duration_s": args.min_duration, "max_duration_s": args.max_duration,
                "warmup_runs": args.warmup_runs, "warmup_duration_s": args.warmup_duration}
    options: dict[str, Any] = {"settings": settings, "seed": args.seed, "sensors": args.sensors}
    for key, value in (("shape", args.shape), ("input", args.input), ("providers", args.providers),
                       ("timeout_s", args.timeout)):
        if value:
            options[key] = value
    try:
        threads = [int(t) for t in args.threads] or None
    except ValueError:
        raise UsageError(f"--threads {','.join(args.threads)}: expected numbers") from None
    matrix = {"models": shas, "devices": device_selector(args.devices), "runtimes": args.runtimes or None,
              "delegates": [[d.strip() for d in chain.split(",") if d.strip()] for chain in args.delegates] or None,
              "threads": threads, "options": options}
    labels = job_labels(getattr(args, "label", None) or [])
    if labels:
        matrix["labels"] = labels
    return matrix


def job_labels(items: list[str]) -> dict:
    """``--label release=v1.5.0`` (repeatable, or comma-separated) -> the labels every job's result carries."""
    from edgebench.agent.fleet.protocol import ProtocolError, parse_labels

    try:
        return parse_labels(",".join(items))
    except ProtocolError as exc:
        raise UsageError(f"--label: {exc}") from None


def cmd_push(args: argparse.Namespace) -> int:
    models = [upload(args.server, Path(model)) for model in args.models]
    reference = upload(args.server, Path(args.reference)) if getattr(args, "reference", None) else None
    quiet = args.json == "-"
    for model in models + ([reference] if reference else []):
        if not quiet:
            print(f"uploaded {model['name']} ({model['format']}, {model['size_bytes']} bytes) sha256 "
                  f"{model['sha256'][:12]}", file=sys.stderr)
    matrix = job_matrix(args, [m["sha256"] for m in models])
    if reference:
        matrix["reference"] = reference["sha256"]  # every job measures its model's drift against it
    batch = request(args.server, "POST", "/api/v1/jobs", json.dumps(matrix).encode())
    if not quiet:
        print(f"batch {batch['batch_id']}: {len(batch['jobs'])} job(s) dispatched", file=sys.stderr)
    if not args.wait:
        emit_json(batch, args.json)
        if not args.json:
            print(batch["batch_id"])
        return 0
    jobs = wait_for(args.server, batch["batch_id"], args.wait_timeout, show=not quiet)
    results = request(args.server, "GET", f"/api/v1/results?batch={batch['batch_id']}")["results"]
    table = comparison(jobs, results)
    emit_json({"batch_id": batch["batch_id"], "rows": table, "jobs": jobs}, args.json)
    if not quiet:
        print(render(table))
    pending = [job for job in jobs if job["state"] not in FINAL]
    if pending:
        print(f"edgebench: error: {len(pending)} job(s) still unfinished after {args.wait_timeout:g}s "
              f"(edgebench jobs --batch {batch['batch_id']})", file=sys.stderr)
        return 1
    return 0


def wait_for(server: str, batch: str, timeout: float, show: bool) -> list[dict]:
    """Poll the batch until every job is final; print each state change per device."""
    deadline, seen = time.monotonic() + timeout, {}
    while True:
        jobs = request(server, "GET", f"/api/v1/jobs?batch={batch}")["jobs"]
        for job in jobs:
            progress = job.get("progress") or {}
            state = job["state"] + (f" ({progress.get('phase')}, {progress.get('runs')} runs)"
                                    if job["state"] == "running" and progress else "")
            if show and seen.get(job["job_id"]) != state:
                print(f"  {job['device_id']:<24} {job['spec']['model']['name']:<32} {state}", file=sys.stderr)
            seen[job["job_id"]] = state
        if all(job["state"] in FINAL for job in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(1.0)


def comparison(jobs: list[dict], results: list[dict]) -> list[dict]:
    by_job = {r["job_id"]: r["summary"] for r in results}
    drifts = {r["job_id"]: r.get("drift") or {} for r in results}
    rows = []
    for job in sorted(jobs, key=lambda j: (j["device_id"], j["spec"]["model"]["name"], j["job_id"])):
        summary = by_job.get(job["job_id"]) or {}
        stats = summary.get("stats") or {}
        physics = summary.get("physics") or {}
        runtime = summary.get("runtime") or {}
        rows.append({
            "device": job["device_id"], "model": job["spec"]["model"]["name"], "job_id": job["job_id"],
            "state": job["state"], "reason": job.get("reason"), "runtime": runtime.get("runtime"),
            "delegate": runtime.get("used"), "threads": runtime.get("threads"),
            "p50_ms": stats.get("p50_ms"), "p90_ms": stats.get("p90_ms"), "p99_ms": stats.get("p99_ms"),
            "energy_per_inference_mj": (physics.get("energy") or {}).get("energy_per_inference_mj"),
            "throttled": (physics.get("throttling") or {}).get("detected"),
            "size_bytes": (summary.get("model") or {}).get("size_bytes"),
            "drift": drifts.get(job["job_id"]) or None,
        })
    return rows


def _ms(value: Optional[float]) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def render(rows: list[dict]) -> str:
    header = f"{'device':<24} {'model':<28} {'runtime':<12} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} " \
             f"{'mJ/inf':>8} {'thr':>4}  state"
    lines, device = [header], None
    for row in rows:
        if device is not None and row["device"] != device:
            lines.append("")
        device = row["device"]
        energy = row["energy_per_inference_mj"]
        throttled = "-" if row["throttled"] is None else ("yes" if row["throttled"] else "no")
        state = row["state"] if row["state"] == "done" else f"{row['state']}: {(row['reason'] or '')[:60]}"
        drift = row.get("drift") or {}
        if drift.get("error"):
            state += f" (no drift: {drift['error'][:60]})"
        elif drift:
            state += f" (drift vs {drift['reference_sha'][:12]}: max abs err {drift['max_abs_err']:.4g}, " \
                     f"cosine {drift['cosine_mean']:.5f})"
        lines.append(f"{row['device'][:24]:<24} {row['model'][:28]:<28} {str(row['runtime'] or '-')[:12]:<12} "
                     f"{_ms(row['p50_ms']):>9} {_ms(row['p90_ms']):>9} {_ms(row['p99_ms']):>9} "
                     f"{(f'{energy:.3f}' if energy is not None else '-'):>8} {throttled:>4}  {state}")
    return "\n".join(lines)


def cmd_devices(args: argparse.Namespace) -> int:
    devices = request(args.server, "GET", "/api/v1/devices")["devices"]
    emit_json(devices, args.json)
    if args.json != "-":
        now = time.time()
        print(f"{'device':<28} {'state':<8} {'last seen':>10}  labels")
        for d in devices:
            labels = ",".join(f"{k}={v}" for k, v in sorted(d["labels"].items()))
            print(f"{d['device_id'][:28]:<28} {d['state']:<8} {now - d['last_seen']:>9.0f}s  {labels}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    path = "/api/v1/jobs" + (f"?batch={urllib.parse.quote(args.batch)}" if args.batch else "")
    jobs = request(args.server, "GET", path)["jobs"]
    emit_json(jobs, args.json)
    if args.json != "-":
        print(f"{'job':<34} {'device':<24} {'model':<28} state")
        for job in jobs:
            reason = f": {job['reason'][:60]}" if job.get("reason") and job["state"] != "done" else ""
            print(f"{job['job_id']:<34} {job['device_id'][:24]:<24} {job['spec']['model']['name'][:28]:<28} "
                  f"{job['state']}{reason}")
    return 0
