"""The ExecuTorch runtime: MiniLM-L6's .pte through the CLI, a tiny module exported here (outputs against torch,
threads, placement against an independent decoding of the program by flatc), and bad programs."""

from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import FAST
from .test_bad_input import assert_one_line_error

pytest.importorskip("executorch.extension.pybindings._portable_lib")
torch = pytest.importorskip("torch")

from edgebench.agent.errors import ModelError, UsageError  # noqa: E402
from edgebench.agent.runtimes.base import RuntimeOptions  # noqa: E402
from edgebench.agent.runtimes.executorch_runtime import ExecuTorchRuntime  # noqa: E402


class Tiny(torch.nn.Module):
    """Two linear layers for XNNPACK, a cumulative sum between them that XNNPACK does not take (a portable kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cumsum(torch.relu(self.a(x)), dim=1)) * scale


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The module, its program lowered to XNNPACK (exported with keyword arguments: the names stay in the .pte), the
    same module as a program whose only method is ``predict``, and a program with its body overwritten."""
    pytest.importorskip("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge, to_edge_transform_and_lower

    torch.manual_seed(0)
    module, folder = Tiny().eval(), tmp_path_factory.mktemp("pte")
    example = {"x": torch.randn(2, 8), "scale": torch.full((2, 4), 0.5)}
    lowered = to_edge_transform_and_lower(torch.export.export(module, (), example),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    (folder / "tiny.pte").write_bytes(lowered.buffer)
    plain = to_edge({"predict": torch.export.export(module, tuple(example.values()))}).to_executorch()
    (folder / "predict.pte").write_bytes(plain.buffer)
    noise = np.random.default_rng(2).integers(0, 256, len(lowered.buffer) - 32, dtype=np.uint8).tobytes()
    (folder / "damaged.pte").write_bytes(lowered.buffer[:32] + noise)  # a valid header ("ET12", "eh00"), then noise
    return {"module": module, "dir": folder, "pte": folder / "tiny.pte", "predict": folder / "predict.pte",
            "damaged": folder / "damaged.pte"}


def flatc_nodes(path: Path, scratch: Path) -> tuple[list[tuple[str, str]], int]:
    """(backend, op) of every node and the number of delegate calls, decoded independently of the plugin: executorch's
    flatc with its own schemas (the program's, then XNNPACK's for each delegate's payload)."""
    import executorch.backends.xnnpack.serialization as xnn_serialization
    from executorch.data.bin import __file__ as bin_init
    from executorch.exir._serialize._flatbuffer import _program_flatbuffer_to_json

    data = path.read_bytes()
    program_size, segment_base = struct.unpack_from("<QQ", data, 16)
    program = json.loads(_program_flatbuffer_to_json(data[:program_size]))
    plan = program["execution_plan"][0]
    flatc, schema = Path(bin_init).parent / "flatc", Path(list(xnn_serialization.__path__)[0]) / "schema.fbs"
    nodes, calls = [], 0
    for instruction in plan["chains"][0]["instructions"]:
        kind, args = instruction["instr_args_type"], instruction["instr_args"]
        if kind == "KernelCall":
            operator = plan["operators"][args["op_index"]]
            nodes.append(("cpu", f"{operator['name']}.{operator['overload']}".rstrip(".")))
        elif kind == "DelegateCall":
            calls += 1
            reference = plan["delegates"][args["delegate_index"]]["processed"]
            segment = program["segments"][reference["index"]]
            start = segment_base + int(segment["offset"])
            payload = data[start:start + int(segment["size"])]
            offset, size = struct.unpack_from("<II", payload, 10)  # the "XH00" header: where the graph lies
            graph = scratch / "graph.xnn"
            graph.write_bytes(payload[offset:offset + size])
            subprocess.run([flatc, "--json", "--raw-binary", "-o", scratch, schema, "--", graph], check=True)
            text = graph.with_suffix(".json").read_text()
            nodes += [("xnnpack", op) for op in re.findall(r'"?xnode_union_type"?: "XNN(\w+)"', text)]
    return nodes, calls


def test_minilm_bench_through_the_cli(cli, models, tmp_path):
    sentences = np.load(models["minilm_l6_sentences.npz"])
    np.save(tmp_path / "ids.npy", sentences["input_ids"][3:4])
    np.save(tmp_path / "mask.npy", sentences["attention_mask"][3:4])
    result = cli("bench", models["minilm_l6_fp32.pte"], *FAST, "--threads", "1", "--profile-ops", "--profile-runs",
                 "3", "--input", f"input_ids={tmp_path / 'ids.npy'}",
                 "--input", f"attention_mask={tmp_path / 'mask.npy'}", "--json", tmp_path / "r.json")
    assert result.code == 0, result
    report = json.loads((tmp_path / "r.json").read_text())
    runtime = report["runtime"]
    assert (runtime["runtime"], runtime["used"], runtime["threads"]) == ("executorch", ["XnnpackBackend", "cpu"], 1)
    assert report["model"]["outputs"] == [{"name": "output_0", "dtype": "float32", "shape": [1, 384], "scale": None,
                                           "zero_point": None}]
    assert "keeps no input names" not in " ".join(runtime["notes"])  # the .pt2 was exported with keywords
    assert [i["source"] for i in report["inputs_fed"]] == [f"file:{tmp_path / 'ids.npy'}",
                                                           f"file:{tmp_path / 'mask.npy'}"]
    expected, delegate_calls = flatc_nodes(models["minilm_l6_fp32.pte"], tmp_path)
    placement = report["placement"]
    assert [(n["backend"], n["op"]) for n in placement["per_node"]] == expected
    assert placement["first_choice"] == "xnnpack"
    assert placement["coverage"] == pytest.approx(sum(b == "xnnpack" for b, _ in expected) / len(expected))
    assert {b["name"]: b["partitions"] for b in placement["backends"]}["xnnpack"] == delegate_calls > 1
    assert "ETDump" in report["ops"]["unavailable"]
    on_xnnpack = sum(backend == "xnnpack" for backend, _ in expected)
    assert f"placement xnnpack: {on_xnnpack}/{len(expected)} nodes in {delegate_calls} partitions" in result.out


def test_minilm_embedding_matches_torchscript(models):
    """The real sentences' embeddings against the same model in PyTorch (its TorchScript form)."""
    sentences = np.load(models["minilm_l6_sentences.npz"])
    session = ExecuTorchRuntime().load(str(models["minilm_l6_fp32.pte"]), RuntimeOptions())
    reference = torch.jit.load(str(models["minilm_l6.pt"])).eval()
    for row in (0, 7):
        ids, mask = sentences["input_ids"][row:row + 1], sentences["attention_mask"][row:row + 1]
        ours = session.infer({"input_ids": ids, "attention_mask": mask})["output_0"]
        with torch.no_grad():
            theirs = reference(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        np.testing.assert_allclose(ours, theirs, atol=2e-4)
        assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-3)  # sentence-transformers' normalised embedding


def test_tiny_outputs_match_torch_and_are_copies(tiny):
    session = ExecuTorchRuntime().load(str(tiny["pte"]), RuntimeOptions())
    assert [(s.name, s.dtype, s.shape) for s in session.inputs] == [("x", "float32", (2, 8)),
                                                                    ("scale", "float32", (2, 4))]
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((2, 8), dtype=np.float32), "scale": np.full((2, 4), s, np.float32)}
             for s in (1.0, -3.0)]
    first = session.infer(feeds[0])["output_0"]
    second = session.infer(feeds[1])["output_0"]  # the same planned memory: the first result must not change
    for feed, out in zip(feeds, (first, second)):
        with torch.no_grad():
            expected = tiny["module"](**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_tiny_placement_against_flatc(tiny, tmp_path):
    session = ExecuTorchRuntime().load(str(tiny["pte"]), RuntimeOptions())
    placement = session.placement({})
    nodes = [(n.backend, n.op) for n in placement.nodes]
    assert (nodes, 2) == flatc_nodes(tiny["pte"], tmp_path)
    assert ("cpu", "aten::cumsum.out") in nodes and nodes.count(("xnnpack", "FullyConnected")) == 2
    assert [n.partition for n in placement.nodes if n.backend == "xnnpack"] == [0] + [1] * (len(nodes) - 2)


def test_worker_result_keeps_the_contract(tiny):
    import jsonschema

    from edgebench.agent.engine import bench
    from edgebench.agent.engine.executors import WORKER_RESULT_SCHEMA
    from edgebench.agent.engine.measure import RunSettings

    settings = RunSettings(min_runs=20, min_duration_s=0.0, warmup_runs=2, warmup_duration_s=0.0, profile_runs=3)
    request = bench.BenchRequest(str(tiny["pte"]), runtime="executorch", settings=settings)
    _, worker_request, executor = bench.prepare(request)
    result = executor.execute(worker_request, request.limits).result
    jsonschema.validate(result, json.loads(WORKER_RESULT_SCHEMA.read_text()))
    assert [node["backend"] for node in result["placement"]["nodes"]].count("cpu") == 1
    assert "ETDump" in result["ops"]["unavailable"]


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_size_the_threadpool(tiny, threads):
    from executorch.extension.pybindings import _portable_lib

    session = ExecuTorchRuntime().load(str(tiny["pte"]), RuntimeOptions(threads=threads))
    assert session.backend.threads == threads == _portable_lib._threadpool_get_thread_count()
    assert session.infer({"x": np.ones((2, 8), np.float32), "scale": np.ones((2, 4), np.float32)})["output_0"].shape \
        == (2, 4)


@pytest.mark.parametrize("options", [RuntimeOptions(delegates=["xnnpack"]), RuntimeOptions(providers=["CPU"]),
                                     RuntimeOptions(delegate_options={"a": "1"})])
def test_chains_are_refused(options):
    with pytest.raises(UsageError, match="executorch takes no delegate or provider chain"):
        ExecuTorchRuntime.check_options(options)


def test_random_bytes_named_pte(cli, tmp_path):
    path = tmp_path / "random.pte"
    path.write_bytes(b"\xff" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line_error(cli("bench", path), 3, "named .pte")


def test_damaged_program_body(cli, tiny):
    assert_one_line_error(cli("bench", tiny["damaged"], *FAST), 3, "ExecuTorch cannot load the model",
                          "damaged or not a valid ExecuTorch program")


def test_program_without_forward(tiny):
    """In process (the damaged program above shows the CLI's one line from the worker): exit 3, one line."""
    with pytest.raises(ModelError) as error:
        ExecuTorchRuntime().load(str(tiny["predict"]), RuntimeOptions())
    assert error.value.exit_code == 3 and "\n" not in str(error.value)
    assert str(error.value) == "the ExecuTorch program has no 'forward' method (its methods: predict)"
