"""`edgebench variants` for PyTorch: a torch.export program (.pt2) or a module given as package.module:factory, made
into ExecuTorch programs (float32 lowered to XNNPACK, PT2E dynamic and static int8), benchmarked by the executorch
runtime against the float32 program, and compared with it."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from .conftest import RUN_LENGTH
from .test_bad_input import assert_one_line_error

pytest.importorskip("executorch.exir")

KINDS = ["dynamic-int8", "static-int8"]
FACTORY = "tests.torch_nets:conv_linear"


def check_document(document: dict, result, kinds=KINDS) -> dict:
    """Every row made, benchmarked by ExecuTorch and compared; the table's rows and its last line the
    recommendation."""
    rows = {row["name"]: row for row in document["variants"]}
    assert list(rows) == ["float32", *kinds]
    for name, row in rows.items():
        assert row["error"] is None, row
        assert row["path"].endswith(f".{name}.pte") and row["size_bytes"] > 0
        assert row["report"]["runtime"]["runtime"] == "executorch"
        assert len(row["report"]["repeats"]) == 2 and row["report"]["stats"]["p90_ms"] > 0
        if name != "float32":
            drift, ratio = row["drift"], row["speedup_p90"]
            assert 0 < drift["cosine_mean"] <= 1 + 1e-9 and drift["max_abs_err"] >= 0
            assert ratio["ci"][0] <= ratio["estimate"] <= ratio["ci"][1]
    lines = result.out.strip().splitlines()
    for name in rows:
        assert any(line.startswith(name + " ") for line in lines), result.out
    assert lines[-1] == document["recommendation"]["line"] and lines[-1].startswith("ship ")
    assert document["recommendation"]["variant"] in rows
    return rows


def test_module_factory_and_its_pt2(cli, tmp_path):
    """A conv + linear module from its factory: exported with --shape as its example input, lowered, static int8
    made from the .pt2 (calibrated on generated sets) and its drift measured on --drift-data's unlabelled samples (a
    .pt2 given as the model goes the same way from its file on; dynamic int8, the same PT2E path with the dynamic
    config, is checked on MiniLM below)."""
    out = tmp_path / "out"
    drift_data = tmp_path / "drift.npz"  # real-looking inputs without labels: --drift-data measures on every one
    np.savez(drift_data, x=np.random.default_rng(3).random((3, 1, 3, 32, 32), dtype=np.float32))
    result = cli("variants", FACTORY, "--shape", "x=1x3x32x32", "--out-dir", out, *RUN_LENGTH, "--repeats", "2",
                 "--only", "static-int8",
                 "--drift-data", drift_data, "--calibration-samples", "4", "--json", tmp_path / "v.json")
    assert result.code == 0, result
    document = json.loads((tmp_path / "v.json").read_text())
    rows = check_document(document, result, ["static-int8"])
    assert document["model"]["format"] == "pt2" and document["model"]["name"] == "conv_linear.pt2"
    assert "exported from tests.torch_nets:conv_linear with example inputs x 1x3x32x32 float32" in \
        " ".join(rows["float32"]["notes"])
    assert rows["static-int8"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert sorted(p.name for p in out.iterdir()) == ["conv_linear.float32.pte", "conv_linear.pt2",
                                                     "conv_linear.static-int8.pte"]
    assert "static int8 calibrated on 4 generated input sets" in result.out
    assert document["drift_data"] == f"3 samples from {drift_data}" and "drift measured on 3 samples" in result.out
    assert rows["static-int8"]["drift"]["samples"] == 3



def test_minilm_dynamic_int8_against_float32_on_real_sentences(cli, models, tmp_path):
    """MiniLM-L6's dynamic int8 program, made from its .pt2 by this maker at fetch time (scripts/fetch_models.py: the
    kind for a linear-heavy transformer; `variants` on the whole model takes minutes here, bench/torch_variants.py
    runs it), against its float32 program on the 24 real tokenized sentences, as `variants --drift-data` measures
    it. The 47 MB embedding table stays float32, so the int8 file is about two thirds of the float one."""
    from edgebench.agent.engine.isolation import ChildLimits
    from edgebench.agent.optimize import compare, variants
    from edgebench.agent.runtimes.base import RuntimeOptions

    fp32, int8 = models["minilm_l6_fp32.pte"], models["minilm_l6_dynamic-int8.pte"]
    assert 0.5 * fp32.stat().st_size < int8.stat().st_size < 0.8 * fp32.stat().st_size
    limits, options = ChildLimits(timeout_s=300), RuntimeOptions(threads=1)
    base = compare.ModelRun(str(fp32), "executorch", options)
    compare.prepare(base, limits)
    assert [spec.name for spec in base.inputs] == ["input_ids", "attention_mask"]  # kept through the lowering
    settings = variants.VariantsSettings(model=str(models["minilm_l6.pt2"]))
    sentences, said = variants.data_sets(base.inputs, settings, str(models["minilm_l6_sentences.npz"]), "--drift-data")
    assert said.startswith("24 samples from")
    candidate = compare.ModelRun(str(int8), "executorch", options)
    compare.prepare(candidate, limits)
    drift = compare.Comparison(base, candidate, limits).run(sentences)["drift"]
    assert drift["samples"] == 24 and drift["top1_agreement"] is None  # an embedding: no classes to agree on
    assert drift["cosine_mean"] > 0.99 and drift["cosine_min"] > 0.98  # of 384-d embeddings, sentence by sentence
    assert drift["reference_range"] < 1  # L2-normalised embeddings: every value within [-1, 1]
    sentences_npz = np.load(models["minilm_l6_sentences.npz"])
    np.save(tmp_path / "ids.npy", sentences_npz["input_ids"][:1])
    np.save(tmp_path / "mask.npy", sentences_npz["attention_mask"][:1])
    result = cli("bench", int8, "--repeats", "1", "--min-runs", "20", "--min-duration", "0", "--warmup-runs", "2",
                 "--warmup-duration", "0", "--threads", "1", "--input", f"input_ids={tmp_path / 'ids.npy'}",
                 "--input", f"attention_mask={tmp_path / 'mask.npy'}", "--json", tmp_path / "int8.json")
    assert result.code == 0, result
    placement = json.loads((tmp_path / "int8.json").read_text())["placement"]
    ops = {node["op"] for node in placement["per_node"] if node["backend"] == "xnnpack"}
    assert any("Convert" in op or "Quantize" in op or "Qd8" in op or "Dynamic" in op for op in ops), ops


def test_bad_pytorch_sources_are_one_line(cli, tmp_path):
    """A factory that does not exist, a .pt2 of random bytes, a state_dict: one line each, nothing made."""
    out = tmp_path / "out"
    assert_one_line_error(cli("variants", "tests.torch_nets:no_such_factory", "--shape", "x=1x3x8x8", "--out-dir",
                              out), 2, "tests.torch_nets:no_such_factory", "has no 'no_such_factory'")
    random = tmp_path / "random.pt2"
    random.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_error(cli("variants", random, "--out-dir", out), 3, "random.pt2")
    state_dict = tmp_path / "weights.pt"  # what torch.save(model.state_dict()) writes: a zip of data.pkl
    with zipfile.ZipFile(state_dict, "w") as archive:
        archive.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("weights/version", "3\n")
    assert_one_line_error(cli("variants", state_dict, "--out-dir", out), 3, "torch.save pickle")
    assert not any(out.iterdir()) if out.exists() else True


@pytest.mark.parametrize("factory, flags, code, says", [
    ("tests.no_such_module:net", [], 2, "module 'tests.no_such_module' cannot be imported"),
    ("tests.torch_nets:NOT_A_FACTORY", ["--shape", "x=1x4"], 2, "is a int, not a callable"),
    ("tests.torch_nets:not_a_module", ["--shape", "x=1x4"], 2, "returned a str, not a torch.nn.Module"),
    ("tests.torch_nets:raises", [], 3, "the factory raised RuntimeError: weights not found"),
    ("tests.torch_nets:data_dependent", ["--shape", "x=1x4"], 3, "torch.export.export failed"),
    ("tests.torch_nets:conv_linear", [], 2, "missing: x"),
    ("tests.torch_nets:conv_linear", ["--shape", "y=1x3x8x8"], 2, "no positional parameter 'y'"),
])
def test_bad_module_specs(factory, flags, code, says, tmp_path):
    """In process (the CLI prints the same message as its one line, above: torch is imported once here, not once a
    case): each bad spec is an EdgebenchError, not a traceback."""
    from edgebench.agent.errors import EdgebenchError
    from edgebench.agent.optimize import variants

    with pytest.raises(EdgebenchError) as caught:
        variants.run(variants.VariantsSettings(model=factory, out_dir=str(tmp_path), shape=[f for f in flags[1::2]]))
    assert caught.value.exit_code == code and says in str(caught.value) and "\n" not in str(caught.value)


def test_eval_and_drift_data_exclude_each_other(tmp_path):
    from edgebench.agent.errors import UsageError
    from edgebench.agent.optimize import variants

    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 4), np.float32))
    with pytest.raises(UsageError, match="--drift-data and --eval: give one"):
        variants.drift_sets([], variants.VariantsSettings(model="m.onnx", drift_data=str(data),
                                                          eval_data=str(data)))
