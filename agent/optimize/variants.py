"""`edgebench variants MODEL.onnx`: float16, dynamic int8 and static int8 (QDQ) variants, benchmarked.

The variants are produced with onnxruntime.quantization (and ORT's float16 converter), then every model,
the float original included, goes through the same engine (bench.run) and the same drift measurement
(compare.Comparison). A variant that cannot be produced or run gets a row saying why; the rest still run.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from edgebench.agent.engine import bench
from edgebench.agent.engine.inputs import build_feeds, load_npz, parse_shapes, parse_sources
from edgebench.agent.engine.isolation import ChildLimits
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.report import fmt_latency, fmt_ratio, human_bytes, latency_unit, table, utc_now
from edgebench.agent.errors import EdgebenchError, InputError, ModelError, UsageError, first_line
from edgebench.agent.modelfile import ONNX, identify
from edgebench.agent.optimize import compare
from edgebench.agent.runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)

SCHEMA = "edgebench.variants/2"  # 2: bench/2 reports (repeats), speed-ups with intervals
KINDS = ("fp16", "dynamic-int8", "static-int8")
MIN_QUANT_OPSET = 13  # per-channel QDQ and most quantized kernels need opset 13


@dataclass
class VariantsSettings:
    """What `edgebench variants` asks for: which variants of which model, benchmarked how."""

    model: str
    out_dir: Optional[str] = None  # None: MODEL.variants/ next to the model
    only: Optional[Sequence[str]] = None  # None: every kind
    calibration: Optional[str] = None  # an .npz of calibration inputs for static int8
    calibration_samples: int = 16  # generated calibration sets when there is no .npz
    samples: int = 16  # input sets the drift is measured on
    shape: Sequence[str] = ()
    input: Sequence[str] = ()
    seed: int = 0
    threads: Optional[int] = None
    providers: Sequence[str] = ()
    run: RunSettings = field(default_factory=RunSettings)  # per repeat
    repeats: int = 5  # each variant's repeats, interleaved with the others' (bench.run_interleaved)
    bench_limits: ChildLimits = field(default_factory=ChildLimits)  # each variant's benchmark process
    timeout_s: Optional[float] = None  # each describe / drift child; None: compare.DEFAULT_TIMEOUT_S


@dataclass
class Variant:
    name: str
    path: Optional[Path] = None
    error: Optional[str] = None
    report: Optional[dict] = None
    drift: Optional[dict] = None
    speedup: Optional[dict] = None  # p50 speed-up against the float model, with its interval
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        size = self.path.stat().st_size if self.path and self.path.exists() else None
        return {"name": self.name, "path": str(self.path) if self.path else None, "size_bytes": size,
                "error": self.error, "notes": self.notes, "drift": self.drift, "speedup": self.speedup,
                "report": self.report}


# ---------------------------------------------------------------- producing the variants

def _import_quantization():
    try:
        import onnx  # noqa: F401 - the quantizer needs it
        from onnxruntime import quantization
    except ImportError as exc:
        raise UsageError(f"making variants needs onnx and onnxruntime: pip install 'edgebench[variants]' ({exc})"
                         ) from None
    return quantization


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """The quantizer logs its own tracebacks, warns, and ORT prints C++ log lines for failures that edgebench
    reports in one line anyway (a row's error): silence them unless --debug asks for everything."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    import onnxruntime

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    onnxruntime.set_default_logger_severity(4)  # fatal only
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnxruntime.set_default_logger_severity(2)  # ORT's default: warnings
        logging.disable(previous)


def preprocess(source: Path, target: Path) -> tuple[Path, list[str]]:
    """Opset >= 13 and ORT's quantization pre-processing (shape inference, graph cleanup); on failure the
    original model is quantized as it is and the note says so."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QUANT_OPSET:
        model = version_converter.convert_version(model, MIN_QUANT_OPSET)
        notes.append(f"opset {opset} converted to {MIN_QUANT_OPSET} for quantization")
    upgraded = target.with_name("upgraded.onnx")
    onnx.save(model, str(upgraded))
    try:
        quant_pre_process(str(upgraded), str(target), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        notes.append(f"quantization pre-processing skipped: {first_line(exc)}")
        return upgraded, notes
    return target, notes


class CalibrationReader:
    """Feeds calibration input sets to onnxruntime.quantization.quantize_static."""

    def __init__(self, input_sets: Sequence[dict]):
        self._sets = iter(input_sets)

    def get_next(self) -> Optional[dict]:
        return next(self._sets, None)

    def rewind(self) -> None:  # older ORT versions never call this; newer ones may
        pass


def calibration_sets(model_inputs: Sequence, settings: VariantsSettings) -> tuple[list[dict], str]:
    """User data from --calibration (.npz: one array per input, first axis = samples) or generated sets."""
    if settings.calibration:
        data = load_npz(settings.calibration, "--calibration")
        names = [spec.name for spec in model_inputs]
        if len(names) == 1 and names[0] not in data and "x" in data:
            data = {names[0]: data["x"]}
        missing = [n for n in names if n not in data]
        if missing:
            raise InputError(f"--calibration {settings.calibration}: no array for input(s) {', '.join(missing)}")
        count = min(len(data[n]) for n in names)
        if not count:
            raise InputError(f"--calibration {settings.calibration}: holds no samples")
        sets = [{n: data[n][i:i + 1] if data[n].ndim == len(spec.shape) else data[n][i]
                 for n, spec in zip(names, model_inputs)} for i in range(count)]
        return sets, f"{count} samples from {settings.calibration}"
    shapes, sources = parse_shapes(settings.shape), parse_sources(settings.input)
    sets = [build_feeds(model_inputs, shapes, sources, settings.seed + 1000 + i)
            for i in range(settings.calibration_samples)]
    return sets, f"{len(sets)} generated input sets (random data: give --calibration for representative ranges)"


def make_fp16(source: Path, target: Path) -> list[str]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return ["float16 weights and activations; inputs and outputs stay float32"]


def make_dynamic_int8(source: Path, target: Path) -> list[str]:
    quantization = _import_quantization()
    quantization.quantize_dynamic(str(source), str(target), weight_type=quantization.QuantType.QInt8)
    return ["int8 weights, activations quantized at run time"]


def make_static_int8(source: Path, target: Path, input_sets: Sequence[dict]) -> list[str]:
    quantization = _import_quantization()
    quantization.quantize_static(str(source), str(target), CalibrationReader(input_sets),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    return ["int8 QDQ, per-channel weights, calibrated activations"]


def produce(kind: str, maker: Callable[[], list[str]], target: Path) -> Variant:
    variant = Variant(kind, target)
    try:
        with quiet_libraries():
            variant.notes = maker()
    except EdgebenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed variant is a row in the table, not the end
        variant.error = f"could not be produced: {first_line(exc)}"
        variant.path = None
    return variant


# ---------------------------------------------------------------- benchmarking and drift

def bench_variants(rows: Sequence[Variant], settings: VariantsSettings) -> None:
    """Benchmark every variant made, the float model included, with their repeats interleaved (the machine's drift
    hits them alike), then each one's p50 speed-up against the float model with a paired interval."""
    made = [row for row in rows if not row.error]
    requests = [bench.BenchRequest(
        model=str(row.path), runtime="onnxruntime",
        options=RuntimeOptions(threads=settings.threads, providers=settings.providers),
        settings=replace(settings.run), shape_args=settings.shape, input_args=settings.input, seed=settings.seed,
        limits=settings.bench_limits, repeats=settings.repeats) for row in made]
    for row, outcome in zip(made, bench.run_interleaved(requests, seed=settings.seed)):
        row.report = outcome.report
        if outcome.error is not None:
            row.error = f"benchmark failed: {outcome.error}"
    base = rows[0].report
    for row in rows:
        if row.report and base:
            row.speedup = bench.speedup(base, row.report)


def measure_drift(base: compare.ModelRun, variants: Sequence[Variant], settings: VariantsSettings,
                  limits: ChildLimits) -> None:
    """Drift of each variant against the float model (described once, shared by every comparison)."""
    for variant in variants:
        if variant.error or not variant.path:
            continue
        candidate = compare.ModelRun(str(variant.path), "onnxruntime", base.options)
        try:
            result = compare.Comparison(base, candidate, limits).run_generated(
                settings.shape, settings.input, settings.samples, settings.seed)
            variant.drift = result["drift"]
        except EdgebenchError as exc:
            variant.error = f"drift could not be measured: {exc}"


# ---------------------------------------------------------------- the table

def render(model_name: str, rows: Sequence[Variant], calibration: Optional[str]) -> str:
    baseline = rows[0].report["stats"] if rows[0].report else None
    unit, scale = latency_unit(baseline["p50_ms"] if baseline else 1.0)
    headers = ["variant", "size", "p50 " + unit, "p90 " + unit, "vs float", "max abs err", "cosine", "top-1"]
    body = []
    base_size = rows[0].path.stat().st_size if rows[0].path else None
    for row in rows:
        size = row.path.stat().st_size if row.path and row.path.exists() else None
        size_text = human_bytes(size)
        if size and base_size and row is not rows[0]:
            size_text += f" ({size / base_size:.0%})"
        if row.report is None:
            body.append([row.name, size_text, "-", "-", "-", "-", "-", row.error or "failed"])
            continue
        stats_ = row.report["stats"]
        speed = fmt_ratio(row.speedup)
        drift = row.drift or {}
        top1 = drift.get("top1_agreement")
        body.append([
            row.name, size_text, fmt_latency(stats_["p50_ms"], scale), fmt_latency(stats_["p90_ms"], scale),
            speed if row is not rows[0] else "1.00x",
            f"{drift['max_abs_err']:.3g}" if drift else "-",
            f"{drift['cosine_mean']:.4f}" if drift else "-",
            f"{top1:.0%}" if top1 is not None else "-",
        ])
    lines = [f"variants of {model_name} (vs float: p50 speed-up [95% interval, repeats interleaved]; drift vs the "
             f"float model)", *table(headers, body)]
    lines += [f"  {row.name}: {row.error}" for row in rows if row.error and row.report is not None]
    if calibration:
        lines.append(f"static int8 calibrated on {calibration}")
    return "\n".join(lines)


def make_out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out-dir {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # before quantizing, not after
            pass
    except OSError as exc:
        raise UsageError(f"--out-dir {path}: cannot write there ({exc.strerror})") from None
    return path


def check(settings: VariantsSettings) -> list[str]:
    """Usage errors first, before any model is loaded: inside a variant's row they would read as its failure.
    Returns the kinds of variant to make."""
    settings.run.validate()
    parse_shapes(settings.shape)
    parse_sources(settings.input)
    kinds = list(settings.only or KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise UsageError(f"--only: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return kinds


def produce_all(model: Path, kinds: Sequence[str], out_dir: Path, input_sets: Sequence[dict]) -> list[Variant]:
    """Each variant in ``out_dir``; the intermediates (the opset-upgraded and pre-processed models) in a
    temporary directory, so that ``out_dir`` holds the variants only (``push MODEL.variants/*.onnx``)."""
    with tempfile.TemporaryDirectory(prefix="edgebench-variants-") as work:
        try:
            with quiet_libraries():
                prepared, notes = preprocess(model, Path(work) / f"{model.stem}.prep.onnx")
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{model.name} cannot be prepared for quantization: {first_line(exc)}") from None
        rows = [Variant("float32", model, notes=notes)]
        makers = {"fp16": lambda t: make_fp16(model, t), "dynamic-int8": lambda t: make_dynamic_int8(prepared, t),
                  "static-int8": lambda t: make_static_int8(prepared, t, input_sets)}
        for kind in kinds:
            target = out_dir / f"{model.stem}.{kind}.onnx"
            rows.append(produce(kind, lambda t=target, k=kind: makers[k](t), target))
    return rows


def run(settings: VariantsSettings) -> tuple[dict, str]:
    """Make, benchmark and compare the variants: the report (schema edgebench.variants/2) and its table."""
    kinds = check(settings)
    model = identify(settings.model)
    if model.format != ONNX:
        raise UsageError(f"variants are made from ONNX models; {model.path.name} is {model.format}")
    _import_quantization()
    out_dir = make_out_dir(Path(settings.out_dir) if settings.out_dir else
                           model.path.with_name(model.path.stem + ".variants"))
    limits = ChildLimits(timeout_s=settings.timeout_s or compare.DEFAULT_TIMEOUT_S, rss_interval_s=None)
    base = compare.ModelRun(str(model.path), "onnxruntime", RuntimeOptions(threads=settings.threads))
    try:  # first: a model ONNX Runtime cannot load (a custom op) fails here, not inside the quantizer
        compare.prepare(base, limits)
    except EdgebenchError as exc:
        raise type(exc)(f"loading the float model: {exc}") from None
    input_sets: list[dict] = []
    calibration = None
    if "static-int8" in kinds:  # bad calibration data fails before any quantizing
        input_sets, calibration = calibration_sets(base.inputs, settings)
    rows = produce_all(model.path, kinds, out_dir, input_sets)
    log.info("benchmarking %s, repeats interleaved", ", ".join(row.name for row in rows if not row.error))
    bench_variants(rows, settings)
    if rows[0].report is None:
        raise ModelError(f"the float model itself failed: {rows[0].error}")
    measure_drift(base, rows[1:], settings, limits)
    document = {"schema": SCHEMA, "created": utc_now(), "model": model.to_dict(), "calibration": calibration,
                "variants": [row.to_dict() for row in rows]}
    return document, render(model.path.name, rows, calibration)
