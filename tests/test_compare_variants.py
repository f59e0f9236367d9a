"""Drift between models (compare) and the variants table, on tiny built models and a real quantized pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgebench.agent.optimize.compare import cosine, drift, is_classifier
from edgebench.agent.tensors import TensorSpec

from .conftest import RUN_LENGTH, fetch_models, linear_model, save_onnx


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_drift_numbers_match_numpy(cli, tiny_onnx, tmp_path):
    """Two linear models whose weights differ: the reported drift equals the drift numpy computes."""
    ref, weights, bias = tiny_onnx(seed=3, name="ref.onnx")
    cand, weights2, bias2 = tiny_onnx(seed=3, name="cand.onnx", noise=0.3)
    result = cli("compare", ref, cand, "--samples", "12", "--seed", "5", "--json", "-")
    assert result.code == 0, result
    document = result.json()
    # The same inputs edgebench generates: float in [0, 1), seeds 5..16, batch 1.
    xs = [np.random.default_rng(5 + i).random((1, 8), dtype=np.float64).astype(np.float32) for i in range(12)]
    expected_ref = [softmax(x @ weights.astype(np.float32) + bias.astype(np.float32)) for x in xs]
    expected_cand = [softmax(x @ weights2.astype(np.float32) + bias2.astype(np.float32)) for x in xs]
    diff = np.concatenate([(a - b).ravel() for a, b in zip(expected_ref, expected_cand)])
    got = document["drift"]
    assert got["samples"] == 12
    assert got["max_abs_err"] == pytest.approx(np.abs(diff).max(), rel=1e-4)
    assert got["mean_abs_err"] == pytest.approx(np.abs(diff).mean(), rel=1e-4)
    agree = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(expected_ref, expected_cand)])
    assert got["top1_agreement"] == pytest.approx(agree)
    assert got["max_abs_err"] > 0 and got["cosine_min"] < 1


def test_identical_models_have_zero_drift(cli, tiny_onnx):
    ref, _, _ = tiny_onnx(name="a.onnx")
    result = cli("compare", ref, ref, "--samples", "4", "--json", "-")
    assert result.code == 0, result
    got = result.json()["drift"]
    assert got["max_abs_err"] == 0 and got["cosine_min"] == pytest.approx(1.0) and got["top1_agreement"] == 1.0


def test_eval_reports_accuracy_of_both(cli, tiny_onnx, tmp_path):
    ref, weights, bias = tiny_onnx(seed=7, name="ref.onnx")
    cand, _, _ = tiny_onnx(seed=8, name="other.onnx")  # unrelated weights: near-chance accuracy
    x = np.random.default_rng(0).random((40, 8)).astype(np.float32)
    y = np.argmax(x @ weights + bias, axis=1)  # labels the reference gets right by construction
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    result = cli("compare", ref, cand, "--eval", tmp_path / "eval.npz", "--json", "-")
    assert result.code == 0, result
    accuracy = result.json()["accuracy"]
    assert accuracy["reference"]["top1"] == 1.0 and accuracy["reference"]["samples"] == 40
    assert accuracy["candidate"]["top1"] < 1.0
    np.savez(tmp_path / "bad.npz", x=x)
    result = cli("compare", ref, cand, "--eval", tmp_path / "bad.npz")
    assert result.code == 3 and "needs an array 'y'" in result.err


def test_quantized_tflite_inputs_and_outputs_are_dequantized(cli, models):
    """The int8 EfficientNet against itself through both paths of quantize/dequantize: zero drift,
    and the output (uint8 scores) is read as probabilities, so its range is about [0, 1]."""
    path = models["efficientnet_lite0_int8.tflite"]
    result = cli("compare", path, path, "--samples", "3", "--json", "-")
    assert result.code == 0, result
    got = result.json()["drift"]
    assert got["max_abs_err"] == 0 and got["top1_agreement"] == 1.0
    assert 0 < got["reference_range"] <= 1.0


@pytest.mark.slow
def test_variants_of_a_real_model(cli, models, tmp_path):
    """PP-OCR's direction classifier: fp16, dynamic and static int8 made, benchmarked, drift measured.
    This is also the real quantized pair: the static int8 model's drift against the float one."""
    out = tmp_path / "variants"
    result = cli("variants", models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192", "--out-dir", out, *RUN_LENGTH,
                 "--repeats", "3", "--samples", "8", "--calibration-samples", "8", "--json", tmp_path / "v.json")
    assert result.code == 0, result
    document = json.loads((tmp_path / "v.json").read_text())
    rows = {row["name"]: row for row in document["variants"]}
    assert list(rows) == ["float32", "fp16", "dynamic-int8", "static-int8"]
    for name in ("fp16", "dynamic-int8", "static-int8"):
        row = rows[name]
        assert row["error"] is None, row
        assert row["size_bytes"] < rows["float32"]["size_bytes"]
        assert row["report"]["stats"]["p50_ms"] > 0
        assert 0 < row["drift"]["max_abs_err"] < 1 and row["drift"]["cosine_mean"] > 0.9
    assert rows["fp16"]["drift"]["max_abs_err"] < rows["static-int8"]["drift"]["max_abs_err"]
    # Interleaved: one group; slot by slot every model ran one repeat before any ran its next one.
    groups = {row["report"]["interleave"]["group"] for row in rows.values()}
    assert len(groups) == 1
    starts = sorted((rep["origin_monotonic_ns"], name, rep["index"]) for name, row in rows.items()
                    for rep in row["report"]["repeats"])
    assert [index for _, _, index in starts] == [0] * 4 + [1] * 4 + [2] * 4
    for name in ("fp16", "dynamic-int8", "static-int8"):  # each speed-up with its paired interval
        speedup, p90 = rows[name]["speedup"], rows[name]["speedup_p90"]
        assert speedup["method"] == "paired t on log" and speedup["ci"][0] < speedup["estimate"] < speedup["ci"][1]
        assert f"{p90['estimate']:.2f}x [{p90['ci'][0]:.2f}" in result.out  # the table shows p90's
    # The recommendation, computed again by hand from the same document (default budgets, latency objective).
    within = [name for name in ("fp16", "dynamic-int8", "static-int8")
              if rows[name]["drift"]["cosine_mean"] >= 0.99
              and (rows[name]["drift"]["top1_agreement"] is None or rows[name]["drift"]["top1_agreement"] >= 0.98)]
    faster = [name for name in within if rows[name]["speedup_p90"]["ci"][0] > 1]
    expected = max(faster, key=lambda name: rows[name]["speedup_p90"]["estimate"]) if faster else "float32"
    advice = document["recommendation"]
    assert advice["variant"] == expected and sorted(advice["within_budgets"]) == sorted(within)
    assert result.out.strip().splitlines()[-1] == advice["line"] and advice["line"].startswith(f"ship {expected}")
    assert sorted(p.name for p in out.iterdir()) == [f"ppocr_cls.{kind}.onnx" for kind in
                                                     ("dynamic-int8", "fp16", "static-int8")]
    for line in ("float32", "fp16", "dynamic-int8", "static-int8", "vs float"):
        assert line in result.out
    # The produced int8 model compared on its own: the same drift machinery, from the CLI.
    pair = cli("compare", models["ppocr_cls.onnx"], out / "ppocr_cls.static-int8.onnx", "--shape", "x=1x3x48x192",
               "--samples", "8", "--repeats", "3", *RUN_LENGTH, "--json", "-")
    assert pair.code == 0, pair
    assert pair.json()["drift"]["max_abs_err"] == pytest.approx(rows["static-int8"]["drift"]["max_abs_err"])
    latency = pair.json()["latency"]  # --repeats: the speed-up too, from interleaved repeats
    assert latency["repeats"] == 3 and latency["speedup"]["method"] == "paired t on log"
    assert latency["speedup"]["ci"][0] < latency["speedup"]["estimate"] < latency["speedup"]["ci"][1]


def test_variants_leave_only_the_variants_in_the_output_folder(cli, tmp_path):
    """The opset-upgraded and pre-processed intermediates never reach --out-dir: `push OUT/*.onnx` uploads the
    variants and nothing else."""
    rng = np.random.default_rng(0)
    model = save_onnx(linear_model(rng.normal(size=(8, 4)), rng.normal(size=4), opset=11), tmp_path / "lin.onnx")
    out = tmp_path / "out"
    result = cli("variants", model, "--out-dir", out, *RUN_LENGTH, "--repeats", "2", "--samples", "2",
                 "--calibration-samples", "2", "--json", tmp_path / "v.json")
    assert result.code == 0, result
    rows = json.loads((tmp_path / "v.json").read_text())["variants"]
    assert [row["error"] for row in rows] == [None] * 4, rows
    assert sorted(p.name for p in out.iterdir()) == ["lin.dynamic-int8.onnx", "lin.fp16.onnx", "lin.static-int8.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lin.onnx", "out", "v.json"]


TFLITE_KINDS = ["fp16", "dynamic-int8", "weight-only-int8", "static-int8"]


def test_tflite_variants_of_a_real_classifier(cli, models, tmp_path):
    """ai-edge-quantizer's four variants of a float32 keyword classifier (softmax over 3 labels), each benchmarked and
    compared, the quantizer's own printing kept off the output, and the folder holding the variants only."""
    out = tmp_path / "variants"
    result = cli("variants", models["star_trek_keywords_f32.tflite"], "--out-dir", out, *RUN_LENGTH, "--repeats", "2",
                 "--samples", "4", "--calibration-samples", "4", "--json", tmp_path / "v.json")
    assert result.code == 0, result
    document = json.loads((tmp_path / "v.json").read_text())
    rows = {row["name"]: row for row in document["variants"]}
    assert list(rows) == ["float32", *TFLITE_KINDS]
    base = rows["float32"]["size_bytes"]
    assert rows["fp16"]["size_bytes"] < 0.6 * base  # float16 weights: about half
    for name in TFLITE_KINDS:
        row = rows[name]
        assert row["error"] is None, row
        assert row["report"]["runtime"]["runtime"] == "litert"
        assert row["drift"]["top1_agreement"] is not None and row["drift"]["cosine_mean"] > 0.9
        if name != "fp16":
            assert row["size_bytes"] < 0.35 * base  # int8 weights: about a quarter
    assert sorted(p.name for p in out.iterdir()) == sorted(f"star_trek_keywords_f32.{k}.tflite" for k in TFLITE_KINDS)
    assert "Quantization Ratio" not in result.out + result.err and "Created TensorFlow Lite" not in result.err
    assert result.out.strip().splitlines()[-1] == document["recommendation"]["line"]


def test_tflite_variants_of_an_older_file_are_really_quantized(cli, models, tmp_path):
    """face_landmark predates builtin_code and has no SignatureDef: without the working copy's fixes every recipe left
    it unchanged (silently) and static calibration had no signature. Landmarks are no class scores: no top-1."""
    result = cli("variants", models["face_landmark_f32.tflite"], "--out-dir", tmp_path / "out", *RUN_LENGTH,
                 "--repeats", "2", "--samples", "3", "--calibration-samples", "3", "--only", "dynamic-int8,static-int8",
                 "--json", tmp_path / "v.json")
    assert result.code == 0, result
    document = json.loads((tmp_path / "v.json").read_text())
    rows = {row["name"]: row for row in document["variants"]}
    notes = " ".join(rows["float32"]["notes"])
    assert "operator codes copied to builtin_code" in notes and "serving_default signature added" in notes
    for name in ("dynamic-int8", "static-int8"):
        assert rows[name]["error"] is None and rows[name]["size_bytes"] < 0.4 * rows["float32"]["size_bytes"]
        assert rows[name]["drift"]["top1_agreement"] is None
    assert "top-1" not in result.out.splitlines()[1]  # no top-1 column for landmarks
    assert "cosine" in document["recommendation"]["line"] or "no variant" in document["recommendation"]["line"]


@pytest.mark.parametrize("flags, says", [(["--providers", "CUDA"], "litert takes delegates"),
                                         (["--only", "static-int4"], "weight-only-int8")])
def test_tflite_variants_refuse_what_they_cannot_do(cli, models, tmp_path, flags, says):
    result = cli("variants", models["sine_float.tflite"], "--out-dir", tmp_path, *flags)
    assert result.code == 2 and says in result.err, result
    assert not list(tmp_path.iterdir())  # refused before anything was made


def test_drift_and_cosine_units():
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.array([1.0, 0]), np.array([0, 1.0])) == 0.0
    d = drift([np.array([0.1, 0.9])], [np.array([0.6, 0.4])])
    assert d["max_abs_err"] == pytest.approx(0.5) and d["top1_agreement"] == 0.0
    assert is_classifier(TensorSpec("p", "float32", (-1, 1000)))
    assert is_classifier(TensorSpec("p", "uint8", (1, 1000)))
    assert not is_classifier(TensorSpec("mask", "float32", (1, 257, 257, 21)))


def test_a_pruned_variant_shows_what_pruning_buys(cli, models, tmp_path):
    """--prune 0.5 on dense kernels: the same file size, a smaller compressed size, its drift; the table gets the
    compressed column for every row."""
    result = cli("variants", models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192", "--out-dir", tmp_path / "out",
                 *RUN_LENGTH, "--repeats", "2", "--samples", "4", "--only", "fp16", "--prune", "0.5",
                 "--json", tmp_path / "v.json", "--markdown", tmp_path / "v.md")
    assert result.code == 0, result
    rows = {row["name"]: row for row in json.loads((tmp_path / "v.json").read_text())["variants"]}
    assert list(rows) == ["float32", "fp16", "pruned-50%"]
    pruned, base = rows["pruned-50%"], rows["float32"]
    assert pruned["error"] is None and abs(pruned["size_bytes"] - base["size_bytes"]) < 0.02 * base["size_bytes"]
    assert pruned["compressed_bytes"] < 0.8 * base["compressed_bytes"]
    assert pruned["drift"]["cosine_mean"] < 1 and pruned["report"]["weights"]["sparsity"] >= 0.45
    assert "magnitude-pruned (50% each" in pruned["notes"][0]
    assert "compressed" in result.out.splitlines()[1]
    assert (tmp_path / "out" / "ppocr_cls.pruned-50.onnx").exists()
    # The same table and recommendation as Markdown, for a pull-request comment.
    document = json.loads((tmp_path / "v.json").read_text())
    comment = (tmp_path / "v.md").read_text()
    assert f"**{document['recommendation']['line']}**" in comment
    assert [line.split(" | ")[0] for line in comment.splitlines() if line.startswith("| `")] == [
        "| `float32`", "| `fp16`", "| `pruned-50%`"]
    refused = cli("variants", models["ppocr_cls.onnx"], "--prune", "1.5")
    assert refused.code == 2 and "--prune" in refused.err


def test_variants_of_a_float_image_classifier_report_accuracy_on_real_pictures(cli, models, tmp_path):
    """EfficientNet-Lite0 as float32 (its int8 weights dequantized: scripts/dequantize_tflite.py), its variants
    calibrated and evaluated on scikit-image's labelled pictures, classes named as the model's own labels."""
    import shutil

    pictures = fetch_models.fetch(list(fetch_models.PICTURES))
    folder = tmp_path / "eval"
    for picture, label in fetch_models.PICTURE_LABELS.items():
        (folder / label).mkdir(parents=True)
        shutil.copy(pictures[picture], folder / label / picture)
    result = cli("variants", models["efficientnet_lite0_f32.tflite"], "--out-dir", tmp_path / "out", *RUN_LENGTH,
                 "--repeats", "2", "--only", "fp16,static-int8", "--eval", folder, "--calibration", folder,
                 "--image-mean", "131", "--image-std", "79.58", "--json", tmp_path / "v.json", timeout=600)
    assert result.code == 0, result
    rows = {row["name"]: row for row in json.loads((tmp_path / "v.json").read_text())["variants"]}
    assert list(rows) == ["float32", "fp16", "static-int8"]
    pictures_count = len(fetch_models.PICTURE_LABELS)
    assert rows["float32"]["accuracy"] == {"top1": 1.0, "top5": 1.0, "samples": pictures_count}
    assert rows["fp16"]["accuracy"]["top1"] == 1.0  # float16 weights change no label here
    assert rows["static-int8"]["accuracy"]["samples"] == pictures_count
    assert "accuracy top-1 (top-5)" in result.out.splitlines()[1]
