"""Tiny LLMs through llama.cpp: SmolLM2-135M (a real GGUF, Q4_1) benchmarked as a generation through the CLI (TTFT,
prefill and decode tokens/s with intervals from repeats, every decode step kept), a sweep of thread counts and prompt
lengths, and bad GGUF files and settings, each one line (energy and throttling: test_llamacpp_physics.py)."""

from __future__ import annotations

import json
import struct

import jsonschema
import pytest

from edgebench.agent.engine.report import SCHEMA_FILE, SWEEP_SCHEMA
from edgebench.agent.modelfile import GGUF, identify

from .conftest import RUN_LENGTH
from .test_bad_input import assert_one_line_error

pytest.importorskip("llama_cpp")

GGUF_MODEL = "smollm2_135m_q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(models):
    return models[GGUF_MODEL]


@pytest.fixture(scope="module")
def generation(smollm2, tmp_path_factory) -> dict:
    """One bench run: a 64-token prompt, 24 tokens decoded, 3 repeats; the runtime by one of its other names."""
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("gguf") / "report.json"
    result = run_cli("bench", str(smollm2), "--runtime", "llama.cpp", "--prompt-tokens", "64", "--gen-tokens", "24",
                     "--repeats", "3", "--threads", "2", "--json", str(out))
    assert result.code == 0, result
    return {"report": json.loads(out.read_text()), "out": result.out}


def test_gguf_is_identified_by_its_header(smollm2, tmp_path):
    assert identify(smollm2).format == GGUF
    short = tmp_path / "short.gguf"
    short.write_bytes(smollm2.read_bytes()[:20])
    with pytest.raises(Exception, match="truncated GGUF file"):
        identify(short)
    old = tmp_path / "old.gguf"
    old.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 10, 10) + bytes(100))
    with pytest.raises(Exception, match="GGUF version 1"):
        identify(old)
    garbled = tmp_path / "garbled.gguf"
    garbled.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 7) + bytes(1000))
    with pytest.raises(Exception, match="damaged GGUF header"):
        identify(garbled)


def test_report_has_ttft_prefill_and_decode_with_intervals(generation):
    report = generation["report"]
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    gen = report["generation"]
    assert (gen["prompt_tokens"], gen["gen_tokens"], gen["context"]) == (64, 24, 88)
    for metric in ("ttft_ms", "prefill_tok_s", "decode_tok_s"):
        assert len(gen[metric]["per_repeat"]) == 3
        low, high = gen[metric]["ci"]
        assert low <= gen[metric]["estimate"] <= high
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dimensions; K and V in f16 for each position of the context
    assert gen["kv_cache_bytes"] % (2 * 30 * 3 * 64 * 2) == 0
    assert gen["kv_cache_bytes"] >= 88 * 2 * 30 * 3 * 64 * 2
    assert report["runtime"]["runtime"] == "llamacpp" and report["runtime"]["threads"] == 2
    assert report["inputs_fed"][0]["tokens"] == 64 and not report["inputs_fed"][0]["repeated"]


def test_decode_tokens_per_second_is_the_count_over_the_decode_steps(generation):
    """Decode tokens/s and the inter-token samples are one measurement: each repeat's rate is its step count over
    the sum of its steps, and TTFT is the prefill plus one pick (it is at least the prefill's time)."""
    report = generation["report"]
    gen = report["generation"]
    for index, repeat in enumerate(report["repeats"]):
        steps = repeat["samples"]["latency_ns"]
        assert len(steps) == 24
        assert gen["decode_tok_s"]["per_repeat"][index] == pytest.approx(24 / (sum(steps) / 1e9), rel=1e-9)
        prefill_s = 64 / gen["prefill_tok_s"]["per_repeat"][index]
        assert gen["ttft_ms"]["per_repeat"][index] / 1e3 >= prefill_s
    assert report["stats"]["count"] == 3 * 24  # the inter-token statistics pool every step


def test_greedy_decoding_repeats_its_tokens_and_the_table_says_it_all(generation):
    gen = generation["report"]["generation"]
    assert gen["same_tokens_every_repeat"] and len(gen["tokens"]) == 25  # the prefill's token and 24 more
    out = generation["out"]
    assert "TTFT" in out and "prefill" in out and "decode" in out and "95% intervals from 3 repeats" in out
    assert "inter-token (ms)" in out or "inter-token (us)" in out


def test_a_sweep_of_thread_counts_and_prompt_lengths_is_one_table(cli, smollm2, tmp_path):
    """--threads 1,2 --prompt-tokens 16,48: their product, one row each (thread counts outermost), every row's
    repeats interleaved with the others'; each report's runtime says its threads."""
    out = tmp_path / "sweep.json"
    result = cli("bench", str(smollm2), "--threads", "1,2", "--prompt-tokens", "16,48", "--gen-tokens", "4",
                 "--repeats", "2", "--json", str(out))
    assert result.code == 0, result
    sweep = json.loads(out.read_text())
    assert sweep["schema"] == SWEEP_SCHEMA
    rows = [(r["runtime"]["threads"], r["generation"]["prompt_tokens"]) for r in sweep["reports"]]
    assert rows == [(1, 16), (1, 48), (2, 16), (2, 48)]
    assert all(len(r["repeats"]) == 2 for r in sweep["reports"])
    groups = {r["interleave"]["group"] for r in sweep["reports"]}
    assert len(groups) == 1  # one run, the rows' repeats interleaved
    lines = result.out.splitlines()
    header = next(line.split() for line in lines if "prompt" in line.split())
    assert header[:3] == ["threads", "prompt", "decoded"]
    table = [tuple(map(int, line.split()[:2])) for line in lines if line.split()[:1] in (["1"], ["2"])]
    assert table == rows
    assert "threads" not in next(line for line in lines if line.startswith("runtime"))  # a column, not one count


def test_a_sweep_of_thread_counts_is_for_language_models_only(cli, models, smollm2):
    assert_one_line_error(cli("bench", str(models["sine_float.tflite"]), "--threads", "1,2"), 2,
                          "--threads 1,2: a sweep of thread counts is for language models")
    assert_one_line_error(cli("bench", str(smollm2), "--threads", "1,2", "--sustained", "2s"), 2,
                          "--sustained is not for a sweep")
    bad = cli("bench", str(smollm2), "--threads", "2,x")
    assert bad.code == 2 and "argument --threads: 'x' is not a positive integer" in bad.err, bad


def test_a_context_longer_than_the_models_is_one_line(cli, smollm2):
    result = cli("bench", str(smollm2), "--prompt-tokens", "8000", "--gen-tokens", "500", *RUN_LENGTH,
                 "--repeats", "1")
    assert_one_line_error(result, 2, "need a context of 8500 tokens", "this model's is 8192")


def test_a_truncated_gguf_is_one_line(cli, smollm2, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2.read_bytes()[:1_000_000])
    assert_one_line_error(cli("bench", str(cut), "--repeats", "1"), 3, "llama.cpp could not load")


def test_random_bytes_named_gguf_are_one_line(cli, tmp_path):
    noise = tmp_path / "noise.gguf"
    noise.write_bytes(bytes(range(256)) * 64)
    assert_one_line_error(cli("bench", str(noise)), 3, "not a TFLite, ONNX, ExecuTorch, PyTorch or GGUF model",
                          "named .gguf")


def test_generation_options_are_for_language_models_only(cli, models, smollm2, tmp_path):
    assert_one_line_error(cli("bench", str(models["sine_float.tflite"]), "--prompt-tokens", "64"), 2,
                          "are for language models")
    assert_one_line_error(cli("bench", str(smollm2), "--shape", "x=1x2"), 2, "input is its prompt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert_one_line_error(cli("bench", str(smollm2), "--prompt-file", str(empty), "--repeats", "1"), 2, "is empty")
    bad = cli("bench", str(smollm2), "--prompt-tokens", "64,0")
    assert bad.code == 2 and "argument --prompt-tokens: '0' is not a positive integer" in bad.err, bad
