"""The TorchScript runtime: Silero VAD (forward(x, sr: int)) and traced MiniLM-L6 through the CLI, a scripted module
saved for the lite interpreter (.ptl), outputs against the module's own call, and bad archives and inputs."""

from __future__ import annotations

import json
import warnings
import zipfile

import jsonschema
import numpy as np
import pytest

from edgebench.agent.engine.report import SCHEMA_FILE

from .conftest import FAST
from .test_bad_input import assert_one_line_error

torch = pytest.importorskip("torch")

from edgebench.agent.engine.inputs import build_feeds, parse_sources  # noqa: E402
from edgebench.agent.engine.isolation import ChildLimits  # noqa: E402
from edgebench.agent.errors import InputError, UsageError  # noqa: E402
from edgebench.agent.optimize.compare import ModelRun, check_same_shapes, generator_spec, infer  # noqa: E402
from edgebench.agent.runtimes.base import Backend, RuntimeOptions  # noqa: E402
from edgebench.agent.runtimes.torchscript import LITE, TorchScriptRuntime, TorchScriptSession  # noqa: E402
from edgebench.agent.tensors import TensorSpec  # noqa: E402

# MiniLM takes 10-100 ms an inference on a 2-core machine: a few runs are enough to check behaviour.
SHORT = [*FAST, "--min-runs", "3", "--min-duration", "0", "--warmup-runs", "1", "--warmup-duration", "0"]


class Scaled(torch.nn.Module):
    """A linear layer times a float argument; a tuple of two tensors out."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.linear(x) * scale
        return y, y.sum(-1)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> dict:
    """The scripted module, saved as full TorchScript (.pt) and for the lite interpreter (.ptl)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("torchscript")
    scripted = torch.jit.script(Scaled().eval())
    scripted.save(str(folder / "scaled.pt"))
    with warnings.catch_warnings():  # torch says the lite interpreter is deprecated: its archives still run
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted._save_for_lite_interpreter(str(folder / "scaled.ptl"))
    return {"module": scripted, "pt": folder / "scaled.pt", "ptl": folder / "scaled.ptl"}


@pytest.fixture
def load():
    """TorchScriptRuntime.load in this process; the process-wide settings it makes for its worker undone after."""
    grad = torch.is_grad_enabled()
    yield lambda path: TorchScriptRuntime().load(str(path), RuntimeOptions())
    torch.set_grad_enabled(grad)


def bench_json(cli, *args) -> dict:
    result = cli("bench", *args, "--json", "-")
    assert result.code == 0, result
    report = result.json()
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    return report


@pytest.mark.slow
def test_silero_vad_with_an_int_argument(cli, models):
    # One intra-op thread: two spin-waiting threads on a busy 2-core machine make this 0.5 ms model take 100 ms.
    report = bench_json(cli, models["silero_vad.jit"], *FAST, "--shape", "x=1x512", "--input", "sr=16000",
                        "--threads", "1")
    runtime = report["runtime"]
    assert (runtime["runtime"], runtime["module"], runtime["used"]) == ("torchscript", "torch.jit", ["cpu"])
    assert runtime["version"] == torch.__version__ and runtime["threads"] == 1
    assert report["inputs_fed"] == [
        {"name": "x", "dtype": "float32", "shape": [1, 512], "source": "random"},
        {"name": "sr", "dtype": "int64", "shape": [], "source": "value:16000"}]
    assert report["stats"]["count"] == len(report["samples"]["latency_ns"]) >= 40


@pytest.mark.slow
def test_silero_vad_needs_its_sample_rate_shape_and_a_valid_chunk(cli, models, load):
    inputs = load(models["silero_vad.jit"]).inputs
    with pytest.raises(InputError, match=r"'sr' takes a value \(int\).*--input sr=NUMBER"):
        build_feeds(inputs, {"x": (1, 512)}, {})
    with pytest.raises(InputError, match="'x': the model does not record its shape.*--shape x="):
        build_feeds(inputs, {}, parse_sources(["sr=16000"]))
    # The model's own ValueError, named in one line (not TorchScript's "operation failed" header): exit 5, as for
    # the same model in ONNX Runtime.
    result = cli("bench", models["silero_vad.jit"], *FAST, "--shape", "x=1x100", "--input", "sr=16000")
    assert_one_line_error(result, 5, "first inference failed", "ValueError", "too short")


@pytest.mark.slow
def test_traced_minilm(cli, models):
    shapes = ["--shape", "input_ids=1x64", "--shape", "attention_mask=1x64"]
    report = bench_json(cli, models["minilm_l6.pt"], *SHORT, *shapes)
    assert report["runtime"]["runtime"] == "torchscript"
    # input_ids feeds the embedding, so the graph says int64; the mask only says Tensor (float32).
    fed = {feed["name"]: (feed["dtype"], feed["shape"]) for feed in report["inputs_fed"]}
    assert fed == {"input_ids": ("int64", [1, 64]), "attention_mask": ("float32", [1, 64])}


@pytest.mark.slow
def test_minilm_outputs_equal_the_modules_own(models):
    """The worker's inference path (compare's) on real sentences, against the module called here."""
    sentences = np.load(models["minilm_l6_sentences.npz"])
    sets = [{name: sentences[name][i:i + 1] for name in ("input_ids", "attention_mask")} for i in (0, 5)]
    run = ModelRun(str(models["minilm_l6.pt"]), runtime="torchscript", options=RuntimeOptions(threads=1))
    outputs = infer(run, sets, ChildLimits())
    module = torch.jit.load(str(models["minilm_l6.pt"]), map_location="cpu").eval()
    with torch.no_grad():
        for feeds, got in zip(sets, outputs):
            expected = module(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))).numpy()
            assert list(got) == ["output_0"] and got["output_0"].shape == (1, 384)
            np.testing.assert_allclose(got["output_0"], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(outputs[0]["output_0"], outputs[1]["output_0"], atol=1e-3)  # two sentences, two vectors


def test_lite_interpreter_outputs_equal_the_modules_own(scaled, load):
    """In this process (the worker's path is MiniLM's above): a tuple out, a float argument in."""
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    session = load(scaled["ptl"])
    assert session.backend.module == LITE
    got = session.infer({"x": x, "scale": np.array(2.5)})
    with torch.no_grad():
        y, total = scaled["module"](torch.from_numpy(x), 2.5)
    assert sorted(got) == ["output_0", "output_1"]
    np.testing.assert_allclose(got["output_0"], y.numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["output_1"], total.numpy(), rtol=1e-6)


def test_lite_interpreter_with_threads_and_op_profile(cli, scaled):
    report = bench_json(cli, scaled["ptl"], *FAST, "--shape", "x=2x4", "--input", "scale=0.5", "--threads", "3",
                        "--profile-ops", "--profile-runs", "5")
    runtime = report["runtime"]
    assert (runtime["module"], runtime["threads"]) == (LITE, 3)
    assert any(note.startswith("bytecode version") for note in runtime["notes"])
    assert {"name": "scale", "dtype": "float64", "shape": [], "source": "value:0.5"} in report["inputs_fed"]
    assert [t["name"] for t in report["model"]["outputs"]] == ["output_0", "output_1"]
    ops = report["ops"]
    assert ops["source"] == "torch-profiler" and ops["runs"] == 5
    assert {row["op"] for row in ops["by_type"]} >= {"aten::linear", "aten::mul", "aten::sum"}


def test_schema_and_traced_sizes_become_specs(scaled):
    """A module whose graph still carries its traced sizes (one traced in this process) gives them as the shape."""
    traced = torch.jit.trace(torch.nn.Embedding(10, 3), torch.zeros(2, 5, dtype=torch.long))
    backend = Backend("torchscript", "torch.jit", torch.__version__)
    (spec,) = TorchScriptSession(traced, "", False, backend).inputs
    assert (spec.dtype, spec.shape) == ("int64", (2, 5))
    x, scale = TorchScriptSession(scaled["module"], str(scaled["pt"]), False, backend).inputs
    assert (x.dtype, x.shape, scale.dtype, scale.shape) == ("float32", ("...",), "float64", ())


def test_compare_takes_the_shape_the_other_model_records():
    """TorchScript's inputs record no shape: compare against a model that does (an ExecuTorch program) takes its."""
    scripted, program = TensorSpec("input_ids", "int64", ("...",)), TensorSpec("input_0", "int64", (1, 64))
    check_same_shapes([(scripted, program), (program, scripted)])
    assert generator_spec(scripted, program).shape == generator_spec(program, scripted).shape == (1, 64)


def test_bad_archives(cli, scaled, tmp_path):
    state_dict = tmp_path / "weights.pt"
    torch.save(Scaled().state_dict(), state_dict)
    assert_one_line_error(cli("bench", state_dict), 3, "torch.save pickle", "state_dict")
    broken = tmp_path / "broken.pt"  # a valid zip whose TorchScript code does not parse
    with zipfile.ZipFile(scaled["pt"]) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            code = "/code/" in item.filename and item.filename.endswith(".py")
            target.writestr(item, b"def forward(self x):\n" if code else source.read(item.filename))
    assert_one_line_error(cli("bench", broken, "--shape", "x=2x4", "--input", "scale=1"), 3,
                          "TorchScript cannot load the model")


def test_delegates_and_providers_are_refused():
    for options in (RuntimeOptions(delegates=["xnnpack"]), RuntimeOptions(providers=["CUDA"])):
        with pytest.raises(UsageError, match="takes no delegates or execution providers"):
            TorchScriptRuntime.check_options(options)
    TorchScriptRuntime.check_options(RuntimeOptions(threads=2))
