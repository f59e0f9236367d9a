"""A language model's generation on the fleet's wire, without running one: a job's generation settings (token counts
only, never a prompt file), the bounded summary a result carries, a lying board's numbers refused with a reason, the
collector and push refusing generation settings for models that generate nothing, and the gates' tokens/s metrics.
The real thing end to end: test_llm_jobs.py."""

from __future__ import annotations

import json
import random
import re
import threading
import urllib.error
import urllib.request

import pytest

from edgebench.agent.errors import UsageError
from edgebench.agent.fleet import protocol as p
from edgebench.server.gates import rules as gates

SHA = "a" * 64
PROMPT, GENERATED = 32, 8


def generation_report(repeats: int = 3) -> dict:
    """The parts of a language model's edgebench.bench/2 report a summary keeps, its ``generation`` pooled by the
    engine's own code (agent/engine/generate.py) from each repeat's timings."""
    from edgebench.agent.engine import generate, stats

    rng = random.Random(2)
    steps = [[rng.randint(20_000_000, 30_000_000) for _ in range(GENERATED)] for _ in range(repeats)]
    parts = []
    for repeat_steps in steps:
        prefill = rng.randint(500_000_000, 700_000_000)
        parts.append({"generation": {"prompt_tokens": PROMPT, "gen_tokens": GENERATED, "context": PROMPT + GENERATED,
                                     "kv_cache_bytes": 5_898_240, "prefill_ns": prefill, "ttft_ns": prefill + 900_000,
                                     "decode_ns": sum(repeat_steps), "tokens": [253, 2244, 1761]}})
    flat = [step for repeat_steps in steps for step in repeat_steps]
    summary = stats.summarize(flat)
    summary["interval"] = stats.interval_summary(steps)
    return {"schema": "edgebench.bench/2", "created": "2026-12-01T10:00:00Z",
            "model": {"name": "smollm2_135m_q4_1.gguf", "sha256": SHA, "format": "gguf", "size_bytes": 98_362_432},
            "runtime": {"runtime": "llamacpp", "used": ["cpu"], "requested": [], "threads": 2},
            "stats": summary, "samples": {"latency_ns": flat},
            "repeats": [{"index": i, "samples": {"latency_ns": s}} for i, s in enumerate(steps)],
            "generation": generate.pooled(parts, summary)}


def result(summary: dict) -> bytes:
    payload = p.envelope("dev1", 1.7e9, event="result", job_id="j1", run_id="j1", summary=summary)
    return json.dumps(payload, separators=(",", ":")).encode()


def validate(summary: dict) -> p.Message:
    return p.validate(p.topic("dev1", p.EVENTS), result(summary))


# ---------------------------------------------------------------- the result

def test_a_result_carries_the_generation_bounded_without_its_tokens():
    report = generation_report()
    summary = p.summarize_report(report)
    carried = summary["generation"]
    assert "tokens" not in carried and summary["repeats"] == 3
    assert (carried["prompt_tokens"], carried["gen_tokens"], carried["sampling"]) == (PROMPT, GENERATED, "greedy")
    for metric in p.GENERATION_METRICS:
        assert carried[metric] == report["generation"][metric] and len(carried[metric]["per_repeat"]) == 3
    assert validate(summary).payload["summary"]["generation"] == carried
    report["generation"]["prefill_energy_per_token_mj"] = 0.25  # where a power sensor measured the prefill
    assert p.summarize_report(report)["generation"]["prefill_energy_per_token_mj"] == 0.25


def _mutated(mutate) -> dict:
    summary = p.summarize_report(generation_report())
    mutate(summary["generation"])
    return summary


def _metric(name: str, **values):
    return lambda g: g[name].update(values)


def _per_repeat(name: str, index: int, value):
    return lambda g: g[name]["per_repeat"].__setitem__(index, value)


@pytest.mark.parametrize("mutate, reason", [
    (_metric("decode_tok_s", estimate=-1.0), "decode_tok_s: field 'estimate' = -1.0 is below 0"),
    (_metric("decode_tok_s", estimate=1e6), "decode_tok_s: estimate 1000000.0 is not among its repeats' values"),
    (_metric("prefill_tok_s", estimate="fast"), "wrong type"),
    (_per_repeat("decode_tok_s", 0, -3.0), "decode_tok_s: per_repeat must hold finite positive numbers"),
    (_per_repeat("decode_tok_s", 0, 0), "finite positive"),
    (_per_repeat("ttft_ms", 1, True), "finite positive"),
    (_per_repeat("ttft_ms", 1, "9"), "finite positive"),
    (lambda g: g["decode_tok_s"]["per_repeat"].append(40.0), "decode_tok_s: per_repeat holds 4 values for 3 repeats"),
    (lambda g: g["decode_tok_s"].update(per_repeat=[]), "holds 0 values; 1 to 1000"),
    (lambda g: g["decode_tok_s"].update(ci=[g["decode_tok_s"]["estimate"] * 2, g["decode_tok_s"]["estimate"] * 3]),
     "decode_tok_s: ci ["),
    (lambda g: g["ttft_ms"].update(rerun=[1.0, g["ttft_ms"]["estimate"] / 2]), "does not hold the estimate"),
    (_metric("prefill_tok_s", ci=[90.0, 10.0]), "low <= high"),
    (_metric("prefill_tok_s", ci=[0.0, 1e9]), "positive"),
    (_metric("prefill_tok_s", ci=[1.0]), "[low, high]"),
    (lambda g: g.pop("decode_tok_s"), "generation.decode_tok_s must be an object"),
    (lambda g: g.update(ttft_ms=676.2), "ttft_ms must be an object"),
    (lambda g: g.update(prompt_tokens=0), "prompt_tokens' = 0 is below 1"),
    (lambda g: g.update(gen_tokens=p.MAX_GENERATION_TOKENS + 1), "is above"),
    (lambda g: g.update(gen_tokens=8.5), "must be an integer"),
    (lambda g: g.update(prompt_tokens=True), "not a boolean"),
    (lambda g: g.update(kv_cache_bytes=-1), "below 0"),
    (lambda g: g.update(energy_per_token_mj="0.5"), "wrong type"),
    (lambda g: g.update(prefill_energy_per_token_mj=[1.0]), "wrong type"),
    (lambda g: g.update(inter_token_ms={"p90": -1.0}), "below 0"),
    (lambda g: g.update(sampling="greedy\nx"), "invalid value"),
    (lambda g: g.update(same_tokens_every_repeat="yes"), "wrong type"),
])
def test_a_lying_boards_generation_is_refused_with_a_reason(mutate, reason):
    """A board with valid credentials may send what it likes: numbers release gates judge are refused unless they
    are finite, positive, one per repeat, an estimate among its repeats' values and inside its intervals (the
    collector stores such a result as a dead letter with the reason, as any refused result)."""
    with pytest.raises(p.ProtocolError, match=re.escape(reason)) as refused:
        validate(_mutated(mutate))
    assert str(refused.value).startswith("summary.generation") and "\n" not in str(refused.value)


def test_a_generation_that_is_not_an_object_is_refused():
    summary = p.summarize_report(generation_report())
    summary["generation"] = "fast"
    with pytest.raises(p.ProtocolError, match="wrong type"):
        validate(summary)


def test_nan_and_huge_lists_are_refused():
    data = result(p.summarize_report(generation_report())).replace(b'"decode_tok_s":{"estimate":',
                                                                   b'"decode_tok_s":{"estimate":NaN,"was":')
    with pytest.raises(p.ProtocolError, match="not a valid number"):
        p.validate(p.topic("dev1", p.EVENTS), data)
    huge = _mutated(lambda g: g["decode_tok_s"].update(per_repeat=[20.0] * 100_000))
    with pytest.raises(p.ProtocolError, match="limit is 262144"):  # the payload's size, before it is parsed
        validate(huge)
    with pytest.raises(p.ProtocolError, match="holds 100000 values; 1 to 1000"):  # the check itself, at any size
        p.check_generation(huge["generation"])


def test_a_result_without_a_generation_or_with_one_repeat_is_accepted():
    summary = p.summarize_report(generation_report(repeats=1))
    assert summary["generation"]["decode_tok_s"]["ci"] is None and "generation" in validate(summary).payload["summary"]
    del summary["generation"]
    assert "generation" not in validate(summary).payload["summary"]


# ---------------------------------------------------------------- the job

def job(**fields) -> p.Job:
    return p.Job(job_id="j1", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10), **fields)


def test_a_job_carries_its_generation_settings_to_the_engine():
    from edgebench.agent.engine.generate import GenerationSettings
    from edgebench.agent.fleet.jobrunner import build_request

    payload = job(generation={"prompt_tokens": PROMPT, "gen_tokens": GENERATED}).to_payload(1.7e9)
    assert payload["generation"] == {"prompt_tokens": PROMPT, "gen_tokens": GENERATED}
    request = build_request(p.Job.from_payload(payload), "/cache/m.gguf")
    assert request.generation == GenerationSettings(prompt_tokens=PROMPT, gen_tokens=GENERATED, prompt_file=None)
    partial = build_request(p.Job.from_payload(job(generation={"gen_tokens": 4}).to_payload(1.7e9)), "/cache/m.gguf")
    assert partial.generation == GenerationSettings(gen_tokens=4)  # the rest: the engine's defaults
    plain = job().to_payload(1.7e9)  # no generation settings: a language model gets the engine's defaults
    assert "generation" not in plain and build_request(p.Job.from_payload(plain), "/cache/m.gguf").generation is None
    assert "generation" in p.JOB_OPTIONS


@pytest.mark.parametrize("generation, reason", [
    ({"prompt_file": "/etc/passwd"}, "generation.prompt_file is not a job's generation setting"),
    ({"prompt_tokens": 0}, "below 1"),
    ({"gen_tokens": p.MAX_GENERATION_TOKENS + 1}, "above"),
    ({"prompt_tokens": "32"}, "wrong type"),
    ({"gen_tokens": 8.5}, "must be an integer"),
    ({"prompt_tokens": True}, "not a boolean"),
    ("32", "wrong type"),
])
def test_a_jobs_generation_settings_are_token_counts_only(generation, reason):
    payload = job().to_payload(1.7e9)
    payload["generation"] = generation
    with pytest.raises(p.ProtocolError, match=re.escape(reason)):
        p.check_job(payload)


def test_the_job_bound_is_the_engines():
    from edgebench.agent.engine.generate import MAX_TOKENS

    assert p.MAX_GENERATION_TOKENS == MAX_TOKENS


# ---------------------------------------------------------------- push and the collector

def push_options(*flags: str) -> dict:
    from edgebench.agent.cli import push as push_cli
    from edgebench.agent.cli.main import build_parser
    from edgebench.agent.fleet.client import job_matrix

    return job_matrix(push_cli.job_options(build_parser().parse_args(["push", "m.gguf", *flags])), [])["options"]


def test_push_sends_one_prompt_length_and_no_file():
    assert push_options("--prompt-tokens", "32", "--gen-tokens", "8")["generation"] == {"prompt_tokens": 32,
                                                                                          "gen_tokens": 8}
    assert push_options("--gen-tokens", "8")["generation"] == {"prompt_tokens": 512, "gen_tokens": 8}
    assert "generation" not in push_options()
    for flags in (("--prompt-tokens", "32,64"), ("--prompt-file", "prompt.txt")):  # a sweep, a file: not for jobs
        with pytest.raises(SystemExit) as exited:
            push_options(*flags)
        assert exited.value.code == 2


def test_push_refuses_generation_settings_for_a_model_that_generates_nothing(models, cli):
    """Before anything is uploaded: one line, exit code 2 (no collector listens at the address given)."""
    from edgebench.agent.cli.push import check_runtimes

    check_runtimes([models["sine_float.tflite"]], [None])
    with pytest.raises(UsageError, match="sine_float.tflite: generation settings .* are for language models"):
        check_runtimes([models["sine_float.tflite"]], [None], generates=True)
    pushed = cli("push", models["sine_float.tflite"], "--server", "http://127.0.0.1:9", "--gen-tokens", "8")
    assert pushed.code == 2 and len(pushed.err.strip().splitlines()) == 1, pushed
    assert "sine_float.tflite: generation settings (--prompt-tokens, --gen-tokens) are for language models" in \
        pushed.err


@pytest.fixture
def api_server(tmp_path):
    """The collector's HTTP API in this process (no broker: the refusal comes before any job is published)."""
    from edgebench.server.api import Api, serve
    from edgebench.server.metrics import Metrics
    from edgebench.server.registry import Registry

    registry = Registry(tmp_path / "registry.sqlite3")
    httpd = serve(Api(registry, None, Metrics(), tmp_path / "models", "", 1 << 30, auth=False), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        registry.close()


def _post(url: str, body: bytes, content_type: str = "application/json") -> dict:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_collector_refuses_generation_settings_for_a_model_that_generates_nothing(api_server, models):
    sine = _post(f"{api_server}/api/v1/models?name=sine_float.tflite", models["sine_float.tflite"].read_bytes(),
                 "application/octet-stream")
    matrix = {"models": [sine["sha256"]], "devices": {"all": True},
              "options": {"generation": {"prompt_tokens": 32, "gen_tokens": 8}}}
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post(f"{api_server}/api/v1/jobs", json.dumps(matrix).encode())
    error = json.loads(refused.value.read())["error"]
    assert refused.value.code == 400 and "\n" not in error
    assert error.startswith("model sine_float.tflite: generation settings (--prompt-tokens, --gen-tokens) are for "
                            "language models (GGUF)"), error


# ---------------------------------------------------------------- release gates

def gate_result(report: dict, release: str, scale: float = 1.0, prompt: int = PROMPT) -> gates.Result:
    """A fleet result as the gates see it: the summary a board sends, its tokens/s scaled by ``scale``."""
    summary = p.summarize_report(report)
    generation = summary["generation"]
    generation["prompt_tokens"] = prompt
    for metric in ("decode_tok_s", "prefill_tok_s"):
        entry = generation[metric]
        entry.update(estimate=entry["estimate"] * scale, per_repeat=[v * scale for v in entry["per_repeat"]],
                     ci=[v * scale for v in entry["ci"]], rerun=[v * scale for v in entry["rerun"]])
    validate(summary)
    return gates.result_from_report(summary, f"{release} {prompt}", {"class": "rpi5", "release": release})


def rules(*tables: dict) -> list[gates.Rule]:
    return gates.rules_from_document({"gate": [{"model": "smollm2_*", "devices": "class=rpi5", **t}
                                               for t in tables]}, "test")


def test_gates_judge_tokens_per_second_higher_is_better_and_ttft_lower():
    report = generation_report()
    current = gate_result(report, "v2")
    decode = report["generation"]["decode_tok_s"]["estimate"]
    ttft = report["generation"]["ttft_ms"]["estimate"]
    verdicts = gates.evaluate(rules(
        {"name": "floor", "metric": "decode_tok_s", "min": decode / 2},
        {"name": "impossible", "metric": "decode_tok_s", "min": 1e9},
        {"name": "prefill", "metric": "prefill_tok_s", "min": 1.0},
        {"name": "ttft", "metric": "ttft_ms", "max": ttft / 2},
        {"name": "energy", "metric": "energy_per_token_mj", "max": 5.0}), [current])
    status = {v.rule.name: v for v in verdicts}
    assert status["floor"].status == "pass" and status["floor"].value == pytest.approx(decode)
    assert status["floor"].interval == report["generation"]["decode_tok_s"]["ci"]
    assert status["impossible"].status == "fail" and "decode_tok_s" in status["impossible"].message
    assert "under the minimum 1e+09tok/s" in status["impossible"].message
    assert status["prefill"].status == "pass"
    assert status["ttft"].status == "fail" and "over the budget" in status["ttft"].message
    assert status["energy"].status == "missing"  # no power sensor: no energy per token, never a pass
    assert status["floor"].config == f"llamacpp cpu, 2 threads, prompt {PROMPT} + {GENERATED} tokens"


def test_a_fall_in_tokens_per_second_is_a_regression_and_token_counts_are_configurations():
    report = generation_report()
    baseline, slower, faster = (gate_result(report, "v1"), gate_result(report, "v2", 0.8),
                                gate_result(report, "v2", 1.2))
    slower.created = faster.created = "2026-12-02"
    regression = rules({"name": "decode vs v1", "metric": "decode_tok_s", "baseline": "v1",
                        "max_regression_pct": 10})
    [fell] = gates.evaluate(regression, [baseline, slower])
    assert fell.status == "fail" and "changed -20.0% vs v1" in fell.message
    [rose] = gates.evaluate(regression, [baseline, faster])
    assert rose.status == "pass"
    other_length = gate_result(report, "v2", 0.5, prompt=128)  # another workload: not compared with prompt 32
    verdicts = gates.evaluate(regression, [baseline, faster, other_length])
    assert sorted(v.status for v in verdicts) == ["missing", "pass"]
    assert {v.config.rsplit(", ", 1)[1] for v in verdicts} == {"prompt 32 + 8 tokens", "prompt 128 + 8 tokens"}


def test_a_report_with_a_lying_generation_is_a_usage_error(tmp_path):
    report = generation_report()
    report["generation"]["decode_tok_s"]["estimate"] = 1e6
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    with pytest.raises(UsageError, match="not a well-formed edgebench report .*decode_tok_s: estimate"):
        gates.load_reports([str(path)])
