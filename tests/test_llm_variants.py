"""`edgebench variants MODEL.gguf`: llama.cpp quantization types made from the real SmolLM2-135M (Q4_1: lower-bit
requantization only, labelled an experiment), benchmarked as generations, and compared on a fixed real text
(perplexity, next-token agreement, greedy continuations), checked against llama-cpp-python's own evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgebench.agent.engine.generate import ScoreSettings
from edgebench.agent.engine.isolation import ChildLimits
from edgebench.agent.optimize import llm_drift
from edgebench.agent.optimize.makers import gguf_variants
from edgebench.agent.runtimes.base import RuntimeOptions

from .test_bad_input import assert_one_line_error

pytest.importorskip("llama_cpp")

ONE_THREAD = RuntimeOptions(threads=1)  # one thread: no spinning workers fighting the other test process for a core
LIMITS = ChildLimits(timeout_s=300, rss_interval_s=None)
SHORT_TEXT = ScoreSettings(tokens=96, prompt_tokens=16, continuation=12)


@pytest.fixture(scope="module")
def smollm2(models):
    return models["smollm2_135m_q4_1.gguf"]


@pytest.fixture(scope="module")
def run(smollm2, tmp_path_factory) -> dict:
    from .conftest import run_cli

    folder = tmp_path_factory.mktemp("gguf-variants")
    result = run_cli("variants", str(smollm2), "--only", "Q4_0", "--prompt-tokens", "16", "--gen-tokens", "8",
                     "--repeats", "2", "--threads", "1", "--objective", "size", "--max-ppl-increase", "10",
                     "--out-dir", str(folder), "--json", str(folder / "variants.json"))
    assert result.code == 0, result
    return {"document": json.loads((folder / "variants.json").read_text()), "out": result.out, "folder": folder}


def test_the_ladder_depends_on_the_source():
    assert gguf_variants.ladder("F16", gguf_variants.KINDS) == (list(gguf_variants.KINDS), [])
    assert gguf_variants.ladder(None, ["Q8_0"]) == (["Q8_0"], [])
    kinds, notes = gguf_variants.ladder("Q4_1", gguf_variants.KINDS)
    assert kinds == ["Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
    assert notes == ["Q8_0, Q6_K, Q5_K_M not made: not smaller than the Q4_1 source"]


def test_drift_numbers_from_scores():
    reference = {"log_probs": [math.log(0.5)] * 4, "top1": [1, 2, 3, 4], "continuation": [7, 8, 9, 10],
                 "text": "t"}
    candidate = {"log_probs": [math.log(0.25)] * 4, "top1": [1, 2, 0, 4], "continuation": [7, 8, 1, 10],
                 "text": "t"}
    drift = llm_drift.drift(reference, candidate)
    assert drift["reference_perplexity"] == pytest.approx(2.0) and drift["perplexity"] == pytest.approx(4.0)
    assert drift["perplexity_increase"] == pytest.approx(1.0)
    assert (drift["next_token_agreement"], drift["continuation_agreement"], drift["first_divergence"]) == (
        0.75, 0.75, 2)
    assert llm_drift.drift(reference, reference)["first_divergence"] is None


def test_scores_match_llama_cpp_pythons_own_evaluation(smollm2):
    """The log-probabilities edgebench computes from one batch of every position's logits equal those of
    llama-cpp-python's high-level Llama (logits_all, its own eval loop), token by token; and scoring is
    deterministic (the source against itself: no drift)."""
    from llama_cpp import Llama

    ours = llm_drift.scores(str(smollm2), "llamacpp", ONE_THREAD, LIMITS, SHORT_TEXT)
    again = llm_drift.scores(str(smollm2), "llamacpp", ONE_THREAD, LIMITS, SHORT_TEXT)
    same = llm_drift.drift(ours, again)
    assert (same["perplexity_increase"], same["next_token_agreement"], same["continuation_agreement"]) == (0, 1, 1)
    # the same context as edgebench's: one batch of the text, llama.cpp's default flash attention (on, for the CPU)
    size = SHORT_TEXT.tokens
    model = Llama(model_path=str(smollm2), n_ctx=size, n_batch=size, n_ubatch=size, flash_attn=True, n_threads=1,
                  logits_all=True, verbose=False)
    tokens = model.tokenize(gguf_text_bytes(), add_bos=True)[:size]
    model.eval(tokens)
    logits = np.asarray(model.scores[:size - 1], dtype=np.float64)
    peak = logits.max(axis=1)
    theirs = logits[np.arange(size - 1), tokens[1:]] - np.log(np.exp(logits - peak[:, None]).sum(axis=1)) - peak
    assert np.allclose(ours["log_probs"], theirs, rtol=0, atol=1e-9)
    assert ours["top1"] == logits.argmax(axis=1).tolist()


def gguf_text_bytes() -> bytes:
    from edgebench.agent.engine.generate import PROMPT_TEXT

    return PROMPT_TEXT.read_bytes()


def test_variants_table_rows_and_recommendation(run):
    document = run["document"]
    rows = {row["name"]: row for row in document["variants"]}
    assert list(rows) == ["Q4_1", "Q4_0"]
    made = rows["Q4_0"]
    assert made["error"] is None and made["size_bytes"] < rows["Q4_1"]["size_bytes"]
    assert gguf_variants.source_type(run["folder"] / "smollm2_135m_q4_1.Q4_0.gguf") == "Q4_0"
    assert any(note.startswith("requantized from Q4_1: an experiment") for note in made["notes"])
    drift = made["drift"]
    assert drift["perplexity_increase"] == pytest.approx(drift["perplexity"] / drift["reference_perplexity"] - 1)
    assert 0 <= drift["next_token_agreement"] <= 1 and drift["scored_tokens"] == 511
    for row in rows.values():
        generation = row["report"]["generation"]
        assert (generation["prompt_tokens"], generation["gen_tokens"]) == (16, 8)
        assert len(generation["decode_tok_s"]["per_repeat"]) == 2
    # within the (wide) budget and smaller, not slower beyond noise: the size objective ships it
    assert document["recommendation"]["variant"] == "Q4_0"
    assert document["recommendation"]["line"].startswith("ship Q4_0:") and "perplexity +" in \
        document["recommendation"]["line"]
    assert "prefill tok/s" in run["out"] and "Q4_0" in run["out"]


def test_gguf_variants_refuse_tensor_options_and_unknown_types(cli, smollm2, tmp_path):
    assert_one_line_error(cli("variants", str(smollm2), "--shape", "x=1x2", "--out-dir", str(tmp_path)), 2,
                          "--shape: not for a GGUF language model")
    assert_one_line_error(cli("variants", str(smollm2), "--only", "Q9_9", "--out-dir", str(tmp_path)), 2,
                          "unknown variant(s) Q9_9")
