"""Tiny LLMs on the fleet: a real GGUF model (SmolLM2-135M Q4_1) pushed with its generation settings, cached and run
by a real agent; its result in the registry and InfluxDB carries TTFT, prefill and decode tokens/s that its own
per-token samples bear out, and release gates judge its decode tokens/s through the collector and InfluxDB alike.
The refusals (generation settings for a model that generates nothing, a lying board's numbers) are in
test_llm_protocol.py."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

GGUF = "smollm2_135m_q4_1.gguf"
PROMPT, GENERATED, REPEATS = 32, 8, 2
GENERATION = ("--prompt-tokens", str(PROMPT), "--gen-tokens", str(GENERATED), "--repeats", str(REPEATS),
              "--threads", "2")


def gates(model: str, minimum: float) -> bytes:
    """Two rules on the language model's decode tokens/s: a reachable minimum, and one no board reaches."""
    rules = [{"name": name, "model": model, "devices": "class=x86", "metric": "decode_tok_s", "min": value}
             for name, value in (("decode floor", minimum), ("decode impossible", 1e9))]
    return json.dumps({"gate": rules}).encode()


def test_a_pushed_gguf_model_lands_with_tokens_per_second_its_samples_bear_out(fleet, models, cli, tmp_path):
    collector = fleet.start_collector()
    fleet.start_agent("llm-board", "class=x86")
    out = tmp_path / "push.json"
    pushed = cli("push", models[GGUF], "--server", collector.url, "--token", collector.token, "--devices",
                 "llm-board", *GENERATION, "--wait", "--wait-timeout", "150", "--json", out)
    assert pushed.code == 0, pushed
    answer = json.loads(out.read_text())
    (job,) = answer["jobs"]
    assert job["state"] == "done" and job["spec"]["generation"] == {"prompt_tokens": PROMPT,
                                                                     "gen_tokens": GENERATED}, job
    (row,) = answer["rows"]
    assert row["decode_tok_s"] > 0 and row["prefill_tok_s"] > 0 and row["ttft_ms"] > 0

    (result,) = collector.get(f"/api/v1/results?batch={answer['batch_id']}")["results"]
    summary = result["summary"]
    generation = summary["generation"]
    assert (summary["runtime"]["runtime"], summary["model"]["format"]) == ("llamacpp", "gguf")
    assert (generation["prompt_tokens"], generation["gen_tokens"]) == (PROMPT, GENERATED)
    assert "tokens" not in generation and generation["kv_cache_bytes"] > 0
    assert all(len(generation[m]["per_repeat"]) == REPEATS for m in ("ttft_ms", "prefill_tok_s", "decode_tok_s"))
    assert row["decode_tok_s"] == generation["decode_tok_s"]["estimate"]

    (point,) = fleet.wait_results(1)
    for metric in ("decode_tok_s", "prefill_tok_s", "ttft_ms"):
        assert point[metric] == pytest.approx(generation[metric]["estimate"], rel=1e-12)
    assert (point["prompt_tokens"], point["gen_tokens"], point["count"]) == (PROMPT, GENERATED, GENERATED * REPEATS)
    low, high = point["decode_ci_low_tok_s"], point["decode_ci_high_tok_s"]
    assert low <= point["decode_tok_s"] <= high and [low, high] == pytest.approx(generation["decode_tok_s"]["ci"])
    # the per-token samples (decode steps, in run order, repeat after repeat) give each repeat's decode tokens/s
    steps = [row["latency_ns"] for row in fleet.influxd.rows(fleet.db, 'SELECT "latency_ns" FROM "edgebench_latency"')]
    assert len(steps) == GENERATED * REPEATS and all(step > 0 for step in steps)
    for repeat, tok_s in enumerate(generation["decode_tok_s"]["per_repeat"]):
        repeat_steps = steps[repeat * GENERATED:(repeat + 1) * GENERATED]
        assert tok_s == pytest.approx(GENERATED / (sum(repeat_steps) / 1e9), rel=1e-9)
    # TTFT includes the prefill: each repeat's TTFT is at least its prompt over its prefill speed
    for ttft, prefill in zip(generation["ttft_ms"]["per_repeat"], generation["prefill_tok_s"]["per_repeat"]):
        assert ttft >= PROMPT / prefill * 1000 * (1 - 1e-9)

    judged = json.loads(collector.request("POST", "/api/gates/evaluate", gates("smollm2_*", 0.01), timeout=60))
    verdicts = {v["rule"]: v for v in judged["verdicts"]}
    assert verdicts["decode floor"]["status"] == "pass", verdicts
    assert verdicts["decode impossible"]["status"] == "fail" and judged["exit_code"] == 1, verdicts
    assert "decode_tok_s" in verdicts["decode impossible"]["message"] and "under the minimum" in \
        verdicts["decode impossible"]["message"]
    assert verdicts["decode floor"]["config"] == f"llamacpp cpu, 2 threads, prompt {PROMPT} + {GENERATED} tokens"
    from edgebench.server.gates import rules as gate_rules
    from edgebench.server.gates import sources

    from_influx = gate_rules.evaluate(gate_rules.rules_from_document(json.loads(gates("smollm2_*", 0.01)), "x"),
                                      sources.results_from_influx(sources.Influx(fleet.influxd.url, fleet.db)))
    assert [(v.rule.name, v.status, v.value, v.config) for v in from_influx] == [
        (v["rule"], v["status"], v["value"], v["config"]) for v in judged["verdicts"]]
