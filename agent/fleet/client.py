"""The collector's HTTP client behind `edgebench push`, `devices` and `jobs` (their command line:
edgebench.agent.cli.push)."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from edgebench.agent.errors import EdgebenchError, ModelError, UsageError
from edgebench.agent.fleet.protocol import GENERATION_METRICS
from edgebench.agent.tls import client_context, unverified

FINAL = ("done", "failed", "cancelled", "rejected")


class ServerError(EdgebenchError):
    """The collector refused a request or cannot be reached."""


@dataclass(frozen=True)
class Server:
    """The collector's HTTP API, the bearer token sent to it (``--token``, ``$EDGEBENCH_TOKEN``) and the CA that
    verifies it over HTTPS (``--server-ca``; None: the system's store)."""

    url: str
    token: Optional[str] = None
    ca: Optional[str] = None

    def headers(self, content_type: str = "application/json") -> dict:
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def request(server: Server, method: str, path: str, body: Optional[bytes] = None,
            content_type: str = "application/json", timeout: float = 60.0) -> Any:
    url = server.url.rstrip("/") + path
    req = urllib.request.Request(url, data=body, method=method, headers=server.headers(content_type))
    context = client_context(server.ca, "--server-ca")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error")
        except ValueError:
            detail = exc.reason
        hint = ""
        if exc.code == 401:
            hint = " (give a token: --token or $EDGEBENCH_TOKEN; `edgebench server token create`)" \
                if not server.token else " (the token is unknown or revoked)"
        raise ServerError(f"{method} {path}: {exc.code} {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"cannot reach the collector at {server.url}: "
                          f"{unverified(reason, '--server-ca FILE') or reason}") from None


def upload(server: Server, path: Path) -> dict:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    query = urllib.parse.urlencode({"name": path.name})
    return request(server, "POST", f"/api/v1/models?{query}", data, "application/octet-stream", timeout=600)


def device_credentials(server: Server, device: str, revoke: bool = False) -> dict:
    """The device's MQTT credentials made (the password, shown once) or revoked by the collector (admin role)."""
    path = f"/api/v1/devices/{urllib.parse.quote(device, safe='')}/credentials"
    return request(server, "DELETE" if revoke else "POST", path, b"")


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


@dataclass
class JobOptions:
    """What a push asks of every job of its matrix: devices, configurations to compare, inputs, run length."""

    devices: str  # ids (a,b), labels (class=rpi5) or all
    runtimes: Sequence[str]
    delegates: Sequence[str]  # chains, each "gpu,xnnpack": one configuration per chain
    threads: Sequence[str]
    providers: Sequence[str]
    shape: Sequence[str]
    input: Sequence[str]  # generated sources only: zeros, ones, random or a number
    seed: int
    sensors: bool
    timeout: Optional[float]  # None: the agent's --job-timeout
    label: Sequence[str]
    min_runs: int
    min_duration: float
    max_duration: float
    warmup_runs: int
    warmup_duration: float
    cpus: Optional[Sequence[int]] = None  # pin each job's benchmark process to these CPUs (bench --cpus)
    repeats: int = 1  # each job's repeats (bench --repeats): fresh processes, the result's units
    profile_runs: int = 0  # bench --profile-ops: inferences per repeat under the runtime's per-op profiler; 0: none
    generation: Optional[dict] = None  # a language model's prompt_tokens, gen_tokens; None: the engine's defaults


def job_matrix(args: JobOptions, shas: list[str]) -> dict:
    settings = {"min_runs": args.min_runs, "min_duration_s": args.min_duration, "max_duration_s": args.max_duration,
                "warmup_runs": args.warmup_runs, "warmup_duration_s": args.warmup_duration}
    if args.profile_runs:  # only when asked: an agent older than the setting refuses a job that names it
        settings["profile_runs"] = args.profile_runs
    options: dict[str, Any] = {"settings": settings, "seed": args.seed, "sensors": args.sensors,
                               "repeats": args.repeats}
    for key, value in (("shape", args.shape), ("input", args.input), ("providers", args.providers),
                       ("timeout_s", args.timeout), ("cpus", list(args.cpus or [])), ("generation", args.generation)):
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


def wait_for(server: Server, batch: str, timeout: float, show: bool) -> list[dict]:
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
        p90 = (stats.get("interval") or {}).get("p90_ms") or {}
        physics = summary.get("physics") or {}
        runtime = summary.get("runtime") or {}
        rows.append({
            "device": job["device_id"], "model": job["spec"]["model"]["name"], "job_id": job["job_id"],
            "state": job["state"], "reason": job.get("reason"), "runtime": runtime.get("runtime"),
            "delegate": runtime.get("used"), "threads": runtime.get("threads"),
            "p50_ms": stats.get("p50_ms"), "p90_ms": stats.get("p90_ms"), "p99_ms": stats.get("p99_ms"),
            "p90_estimate_ms": p90.get("estimate"), "p90_ci_ms": p90.get("ci"),  # from the repeats' spread
            "energy_per_inference_mj": (physics.get("energy") or {}).get("energy_per_inference_mj"),
            "throttled": (physics.get("throttling") or {}).get("detected"),
            "size_bytes": (summary.get("model") or {}).get("size_bytes"),
            "drift": drifts.get(job["job_id"]) or None,
            **generation_row(summary.get("generation") or {}),
        })
    return rows


def generation_row(generation: dict) -> dict:
    """A language model's numbers in a comparison row: the estimates over the repeats (None for other models)."""
    return {metric: (generation.get(metric) or {}).get("estimate") for metric in GENERATION_METRICS}


def recommendations(jobs: list[dict], results: list[dict], reference_sha: str, budgets) -> list[dict]:
    """For each board that ran the reference model itself and its variants (``push VARIANTS... REF --reference
    REF``), the variant to ship there, judged as ``edgebench variants`` judges one machine (optimize/recommend.py):
    speed-ups paired by repeat against the reference's job, drift measured on the board. Boards grouped by their
    ``class`` label: one line for a class whose boards agree."""
    from edgebench.agent.engine import bench
    from edgebench.agent.optimize.makers.base import Variant
    from edgebench.agent.optimize.recommend import recommend

    by_job = {r["job_id"]: r for r in results}
    boards: dict[str, list[tuple[dict, dict]]] = {}
    for job in jobs:
        if job["job_id"] in by_job:
            boards.setdefault(job["device_id"], []).append((job, by_job[job["job_id"]]))
    verdicts = []
    for device, runs in sorted(boards.items()):
        base = next((r for job, r in runs if job["spec"]["model"]["sha256"] == reference_sha), None)
        if base is None:
            continue
        rows = [Variant(job["spec"]["model"]["name"], report=result["summary"], drift=result.get("drift"),
                        known_size=(result["summary"].get("model") or {}).get("size_bytes"))
                for job, result in sorted(runs, key=lambda item: item[1] is not base)]
        rows[0].drift = None  # the reference against itself
        for row in rows:
            row.speedup_p90 = bench.speedup(base["summary"], row.report, "p90_ms")
        advice = recommend(rows, budgets)
        verdicts.append({"device": device, "class": (base.get("labels") or {}).get("class"), **advice})
    return verdicts


def recommendation_lines(verdicts: list[dict]) -> list[str]:
    """``class rpi5 (3 boards): ship static-int8: ...``, or one line per board where a class's boards disagree."""
    classes: dict[Optional[str], list[dict]] = {}
    for verdict in verdicts:
        classes.setdefault(verdict["class"], []).append(verdict)
    lines = []
    for name, members in sorted(classes.items(), key=lambda item: str(item[0])):
        if name is not None and len({m["variant"] for m in members}) == 1:
            lines.append(f"class {name} ({len(members)} board{'s' if len(members) > 1 else ''}): "
                         f"{members[0]['line']}")
        else:
            lines += [f"{m['device']}: {m['line']}" for m in members]
    return lines


def _ms(value: Optional[float]) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _interval(row: dict) -> str:
    """The p90 estimate with its 95% interval from the repeats (docs/statistics.md), or '-'."""
    ci, estimate = row.get("p90_ci_ms"), row.get("p90_estimate_ms")
    return f"{estimate:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and estimate is not None else "-"


def render(rows: list[dict]) -> str:
    header = f"{'device':<24} {'model':<28} {'runtime':<12} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} " \
             f"{'p90 estimate [95% CI]':>26} {'mJ/inf':>8} {'thr':>4}  state"
    lines, device = [header], None
    for row in rows:
        if device is not None and row["device"] != device:
            lines.append("")
        device = row["device"]
        energy = row["energy_per_inference_mj"]
        throttled = "-" if row["throttled"] is None else ("yes" if row["throttled"] else "no")
        state = row["state"] if row["state"] == "done" else f"{row['state']}: {(row['reason'] or '')[:60]}"
        if row.get("decode_tok_s") is not None:
            state += f" (decode {row['decode_tok_s']:.1f} tok/s, prefill {row['prefill_tok_s']:.1f} tok/s, " \
                     f"TTFT {row['ttft_ms']:.1f} ms)"
        drift = row.get("drift") or {}
        if drift.get("error"):
            state += f" (no drift: {drift['error'][:60]})"
        elif drift:
            state += f" (drift vs {drift['reference_sha'][:12]}: max abs err {drift['max_abs_err']:.4g}, " \
                     f"cosine {drift['cosine_mean']:.5f})"
        lines.append(f"{row['device'][:24]:<24} {row['model'][:28]:<28} {str(row['runtime'] or '-')[:12]:<12} "
                     f"{_ms(row['p50_ms']):>9} {_ms(row['p90_ms']):>9} {_ms(row['p99_ms']):>9} "
                     f"{_interval(row):>26} {(f'{energy:.3f}' if energy is not None else '-'):>8} {throttled:>4}  "
                     f"{state}")
    return "\n".join(lines)
