"""Unit tests of the engine's pure parts: statistics, input generation, the run loop, model sniffing,
provenance, and the CLI's start-up cost."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from edgebench.agent.engine import inputs, provenance, stats
from edgebench.agent.engine.measure import RunSettings, run_loop
from edgebench.agent.errors import InputError, ModelError, UsageError
from edgebench.agent.modelfile import identify
from edgebench.agent.tensors import TensorSpec

from .conftest import REPO

# ---------------------------------------------------------------- statistics

def test_min_samples_match_the_documented_rule():
    assert [stats.min_samples(q / 100) for q in (50, 90, 95, 99)] == [6, 36, 72, 368]


def test_ci_ranks_exist_exactly_from_min_samples():
    for q in (0.5, 0.9, 0.99):
        need = stats.min_samples(q)
        assert stats.quantile_ci_ranks(need - 1, q) is None
        assert stats.quantile_ci_ranks(need, q) is not None


def test_p90_interval_covers_the_true_quantile_about_95_percent():
    """Exponential latencies have a known p90 (ln 10); the distribution-free interval must cover it in at
    least ~95% of repeated experiments (it is conservative, so it may cover more)."""
    rng = np.random.default_rng(42)
    true_p90 = np.log(10.0)
    covered = 0
    trials = 400
    for _ in range(trials):
        sample = rng.exponential(size=200)
        summary = stats.summarize((sample * 1e6).astype(np.int64))
        low, high = summary["p90_ci_ms"]
        covered += low <= true_p90 <= high
    assert covered / trials >= 0.93


def test_summary_and_verdict():
    latencies = np.arange(1, 101) * 1_000_000  # 1..100 ms
    summary = stats.summarize(latencies, wall_ns=int(latencies.sum()))
    assert summary["p50_ms"] == pytest.approx(50.5) and summary["p90_ms"] == pytest.approx(90.1)
    assert summary["min_ms"] == 1 and summary["max_ms"] == 100
    assert summary["throughput_ips"] == pytest.approx(100 / 5.05)
    verdict = stats.verdict(summary)
    assert not verdict["valid"] and "p95 needs at least 72" not in verdict["reasons"][0]
    assert any("p99 needs at least 368" in r for r in verdict["reasons"])
    assert stats.verdict(stats.summarize(np.ones(400, dtype=np.int64)))["valid"]
    assert not stats.verdict(stats.summarize(np.ones(400, dtype=np.int64)), reached_min_duration=False)["valid"]
    with pytest.raises(ValueError):
        stats.summarize([])


# ---------------------------------------------------------------- inputs

def spec(dtype, shape, scale=None, zp=None):
    return TensorSpec("x", dtype, tuple(shape), scale, zp)


def test_generated_data_fits_each_dtype():
    rng = np.random.default_rng(0)
    u8 = inputs.generate(spec("uint8", [1, 1000]), (1, 1000), rng)
    i8 = inputs.generate(spec("int8", [1, 1000]), (1, 1000), rng)
    f32 = inputs.generate(spec("float32", [1, 1000]), (1, 1000), rng)
    i64 = inputs.generate(spec("int64", [5]), (5,), rng)
    assert u8.dtype == np.uint8 and u8.min() < 10 and u8.max() > 245
    assert i8.dtype == np.int8 and i8.min() < -118 and i8.max() > 117
    assert f32.dtype == np.float32 and f32.min() >= 0 and f32.max() < 1
    assert i64.dtype == np.int64 and i64.min() >= 0 and i64.max() < 10
    with pytest.raises(InputError, match="--input"):
        inputs.generate(spec("object", [1]), (1,), rng)


def test_dynamic_dimensions():
    assert inputs.resolve_shape(spec("float32", [-1, 3, 224, 224]), None) == (1, 3, 224, 224)
    with pytest.raises(InputError, match=r"dynamic dimension 2 \('H'\).*--shape x=1x3xNx224"):
        inputs.resolve_shape(spec("float32", [-1, 3, "H", 224]), None)
    assert inputs.resolve_shape(spec("float32", [-1, 3, "H", 224]), (2, 3, 32, 224)) == (2, 3, 32, 224)


def test_parse_shapes_and_sources():
    assert inputs.parse_shapes(["x=1x3x8x8", "sr=scalar", "y=2,5"]) == {"x": (1, 3, 8, 8), "sr": (), "y": (2, 5)}
    with pytest.raises(UsageError):
        inputs.parse_shapes(["x1x3"])
    sources = inputs.parse_sources(["sr=16000", "state=zeros", "audio.npy"])
    assert sources["sr"].value == 16000 and sources["state"].kind == "zeros" and sources[""].kind == "file"


def test_quantize_round_trip():
    s = spec("uint8", [4], scale=0.5, zp=10)
    q = np.array([0, 10, 20, 255], dtype=np.uint8)
    assert np.array_equal(inputs.quantize(inputs.dequantize(q, s), s), q)
    assert inputs.dequantize(q, s).tolist() == [-5.0, 0.0, 5.0, 122.5]
    assert inputs.quantize(np.array([1e6, -1e6]), s).tolist() == [255, 0]  # clipped, not wrapped


def test_npy_dtype_cast_rules(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 4), np.float64))
    assert inputs.load_npy(tmp_path / "a.npy", spec("float32", [1, 4])).dtype == np.float32
    with pytest.raises(InputError, match="dtype float64"):
        inputs.load_npy(tmp_path / "a.npy", spec("uint8", [1, 4]))


# ---------------------------------------------------------------- run loop

def test_run_loop_needs_both_minimums_and_stops_at_the_maximum():
    fast = run_loop(lambda: None, min_runs=50, min_duration_s=0.05, max_duration_s=5)
    assert len(fast.latency_ns) >= 50 and fast.wall_ns >= 0.05e9 and fast.reached_min_runs
    slow = run_loop(lambda: time.sleep(0.01), min_runs=1000, min_duration_s=0, max_duration_s=0.1)
    assert 5 <= len(slow.latency_ns) < 1000 and not slow.reached_min_runs
    assert all(lat >= 0.01e9 for lat in slow.latency_ns)


def test_run_settings_validation():
    with pytest.raises(UsageError):
        RunSettings(min_runs=0).validate()
    with pytest.raises(UsageError):
        RunSettings(min_duration_s=10, max_duration_s=5).validate()


# ---------------------------------------------------------------- model files and provenance

def test_identify_by_content(models, tmp_path):
    assert identify(models["sine_float.tflite"]).format == "tflite"
    assert identify(models["ppocr_cls.onnx"]).format == "onnx"
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(models["sine_float.tflite"].read_bytes())
    assert identify(renamed).format == "tflite"
    with pytest.raises(ModelError, match="not a TFLite, ONNX, ExecuTorch, PyTorch or GGUF model"):
        (tmp_path / "x.onnx").write_text("hello")
        identify(tmp_path / "x.onnx")


def test_pytorch_files_are_told_apart_by_their_archives(models, tmp_path):
    """PyTorch's .pt may hold a TorchScript program or a torch.save pickle, and .pt2 a torch.export program: each
    archive's own records say which, whatever the file is named."""
    import zipfile

    assert identify(models["minilm_l6_fp32.pte"]).format == "pte"
    assert identify(models["silero_vad.jit"]).format == "torchscript"
    assert identify(models["minilm_l6.pt2"]).format == "pt2"
    pickle = tmp_path / "weights.pt"  # the layout torch.save writes (a state_dict)
    with zipfile.ZipFile(pickle, "w") as archive:
        archive.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("weights/version", "3\n")
    with pytest.raises(ModelError, match="is a torch.save pickle .* not a model edgebench can run"):
        identify(pickle)
    other = tmp_path / "docs.pt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelError, match="zip archive but not a PyTorch model"):
        identify(other)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ModelError, match="damaged zip archive"):
        identify(damaged)
    cut = tmp_path / "cut.pte"
    cut.write_bytes(models["minilm_l6_fp32.pte"].read_bytes()[:4096])
    with pytest.raises(ModelError, match="truncated ExecuTorch program"):
        identify(cut)


def test_provenance_from_a_recorded_pi_tree(tmp_path):
    """A minimal Raspberry Pi 5 tree (layout of /proc and /sys as on Raspberry Pi OS bookworm)."""
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nprocessor\t: 1\n\n"
                                          "Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal:        8245984 kB\nMemFree:         7000000 kB\n")
    (tmp_path / "sys/devices/system/cpu/cpufreq/policy0").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/cpufreq/policy0/scaling_governor").write_text("ondemand\n")
    (tmp_path / "sys/devices/system/cpu/present").write_text("0-3\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian"\n')
    facts = provenance.collect(str(tmp_path))
    assert facts["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert facts["cpu"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert facts["cores"] == 4 and facts["governors"] == {"policy0": "ondemand"}
    assert facts["memory_total_bytes"] == 8245984 * 1024 and facts["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert "python" not in facts  # host facts only for the live root


def test_provenance_of_this_machine():
    facts = provenance.collect("/")
    assert facts["cores"] and facts["kernel"] and facts["python"]


# ---------------------------------------------------------------- packaging and start-up

def test_help_imports_neither_numpy_nor_a_runtime():
    code = ("import sys\nfrom edgebench.agent.cli.main import main\n"
            "try:\n    main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'onnxruntime', 'ai_edge_litert', 'psutil') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--min-runs" in out and "HEAVY []" in out


def test_installed_as_edgebench_agent_only(tmp_path):
    """The package installs as edgebench.agent / edgebench.server; no top-level `agent` module leaks."""
    code = ("import importlib.util as u, edgebench.agent, edgebench.server\n"
            "print(u.find_spec('agent'), u.find_spec('server'), edgebench.agent.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert out.startswith("None None ")
    assert (REPO / "pyproject.toml").exists()
