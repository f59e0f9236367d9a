"""A language model's generation on a recorded board (the Jetson Orin Nano tree, tests/fixtures/boards): energy per
decoded token is the physics' energy per inference (decode steps are the inferences), energy per prompt token is the
same integral over the prefills, and throttling that starts at a known decode step is detected as in any other run.

The board's VDD_IN rail holds one draw (volts x amps of the tree) and no idle baseline is taken, so every energy is
that power over its windows: exact figures to check, with no wall-clock bound."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from edgebench.agent.engine.report import SCHEMA_FILE, render

from .conftest import run_cli
from .test_llamacpp import GGUF_MODEL
from .test_physics import BOARDS, ZONE0, assert_onset_within_run, at_measured_run, ina_file

pytest.importorskip("llama_cpp")

PROMPT, STEPS, REPEATS = 16, 16, 2
THROTTLE_AT = 12  # the decode step inside which the CPU zone crosses its passive trip point (99 °C)


@pytest.fixture(scope="module")
def board(models, tmp_path_factory) -> dict:
    """One bench of SmolLM2 on a copy of the Orin Nano tree whose CPU zone reads 101.5 °C from decode step
    THROTTLE_AT of each repeat (tests/llamacpp_plugins.py: the event placed at a token, not at a time)."""
    root = tmp_path_factory.mktemp("board") / "jetson"
    shutil.copytree(BOARDS / "jetson-orin-nano", root)
    result = run_cli("bench", models[GGUF_MODEL], "--runtime", "tests.llamacpp_plugins:WritesFileAtStep",
                     "--prompt-tokens", str(PROMPT), "--gen-tokens", str(STEPS), "--repeats", str(REPEATS),
                     "--threads", "2", "--sensors-root", root, "--idle-baseline", "0", "--json", "-",
                     env=at_measured_run(THROTTLE_AT, root / ZONE0, "101500\n"))
    assert result.code == 0, result
    watts = float(ina_file(root, "in").read_text()) / 1000 * float(ina_file(root, "curr").read_text()) / 1000
    return {"report": result.json(), "watts": watts}


def test_energy_per_token_is_the_energy_per_decode_step(board):
    report, watts = board["report"], board["watts"]
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    assert report["runtime"]["runtime"] == "llamacpp"  # the plugin is llama.cpp, generating
    energy, generation = report["physics"]["energy"], report["generation"]
    assert energy["source"] == "hwmon/ina3221/VDD_IN/power"
    assert energy["inferences"] == report["stats"]["count"] == REPEATS * STEPS
    assert generation["energy_per_token_mj"] == energy["energy_per_inference_mj"] > 0
    # each repeat's decode window: from its first step's start to its last step's end
    decode_s = sum(r["samples"]["start_offset_ns"][-1] + r["samples"]["latency_ns"][-1]
                   for r in report["repeats"]) / 1e9
    assert energy["window_s"] == pytest.approx(decode_s, rel=1e-9)
    assert generation["energy_per_token_mj"] == pytest.approx(watts * decode_s / (REPEATS * STEPS) * 1e3, rel=1e-6)
    for repeat in report["repeats"]:
        assert repeat["physics"]["energy"]["inferences"] == STEPS
    assert "mJ per decoded token" in render(report)


def test_energy_per_prompt_token_is_taken_over_the_prefills(board):
    """Each repeat's prefill window is its prefill's own (prefill tokens/s is the prompt over it), before its first
    decode step; the prefill energy is the rail's power over those windows, shared by the prompt tokens."""
    report, watts = board["report"], board["watts"]
    generation = report["generation"]
    windows = [repeat["prefill_monotonic_ns"] for repeat in report["repeats"]]
    for (start, end), repeat, rate in zip(windows, report["repeats"], generation["prefill_tok_s"]["per_repeat"]):
        assert start < end < repeat["origin_monotonic_ns"]
        assert PROMPT / ((end - start) / 1e9) == pytest.approx(rate, rel=1e-9)
    prefill_s = sum(end - start for start, end in windows) / 1e9
    prefill = generation["prefill_energy"]
    assert prefill["inferences"] == REPEATS * PROMPT and prefill["window_s"] == pytest.approx(prefill_s, rel=1e-9)
    assert generation["prefill_energy_per_token_mj"] == prefill["energy_per_inference_mj"] > 0
    assert prefill["energy_per_inference_mj"] == pytest.approx(watts * prefill_s / (REPEATS * PROMPT) * 1e3, rel=1e-6)
    assert "mJ per prompt token" in render(report)


def test_throttling_onset_is_detected_during_the_generation(board):
    report = board["report"]
    throttling = report["physics"]["throttling"]
    assert throttling["detected"]
    (event,) = [e for e in throttling["events"] if e["sensor"] == "thermal/cpu-thermal"]
    assert event["reason"] == "over_passive_trip" and event["value"] == pytest.approx(101.5)
    assert_onset_within_run(report, throttling["onset_s"])
    assert "THROTTLED" in render(report)
