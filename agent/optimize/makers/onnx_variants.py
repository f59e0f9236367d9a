"""ONNX variants through onnxruntime.quantization: float16 (ORT's converter), dynamic int8 and static int8 (QDQ,
calibrated). Benchmarked by the onnxruntime runtime."""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from edgebench.agent.errors import ModelError, UsageError, first_line
from edgebench.agent.modelfile import ONNX
from edgebench.agent.optimize.makers.base import Variant, produce

FORMAT = ONNX
RUNTIME = "onnxruntime"
SUFFIX = ".onnx"
KINDS = ("fp16", "dynamic-int8", "static-int8")
CALIBRATED = ("static-int8",)
MIN_QUANT_OPSET = 13  # per-channel QDQ and most quantized kernels need opset 13


def check_installed() -> None:
    try:
        import onnx  # noqa: F401 - the quantizer needs it
        from onnxruntime import quantization  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"making variants needs onnx and onnxruntime: pip install 'edgebench[variants]' ({exc})"
                         ) from None


def _quantization():
    check_installed()
    from onnxruntime import quantization

    return quantization


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """The quantizer logs its own tracebacks and warnings (``WARNING root:`` lines), and ORT prints C++ log lines for
    failures that edgebench reports in one line anyway (a row's error): kept out of the output unless --debug asks
    for everything."""
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


def make_fp16(source: Path, target: Path) -> list[str]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return ["float16 weights and activations; inputs and outputs stay float32"]


def make_dynamic_int8(source: Path, target: Path) -> list[str]:
    quantization = _quantization()
    quantization.quantize_dynamic(str(source), str(target), weight_type=quantization.QuantType.QInt8)
    return ["int8 weights, activations quantized at run time"]


def make_static_int8(source: Path, target: Path, input_sets: Sequence[dict]) -> list[str]:
    quantization = _quantization()
    quantization.quantize_static(str(source), str(target), CalibrationReader(input_sets),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    return ["int8 QDQ, per-channel weights, calibrated activations"]


def produce_all(model: Path, kinds: Sequence[str], out_dir: Path, input_sets: Sequence[dict],
                step: Callable[[str], None]) -> list[Variant]:
    """Each variant in ``out_dir``; the intermediates (the opset-upgraded and pre-processed models) in a
    temporary directory, so that ``out_dir`` holds the variants only (``push MODEL.variants/*.onnx``)."""
    with tempfile.TemporaryDirectory(prefix="edgebench-variants-") as work:
        step("preparing the model for quantization")
        try:
            with quiet_libraries():
                prepared, notes = preprocess(model, Path(work) / f"{model.stem}.prep.onnx")
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{model.name} cannot be prepared for quantization: {first_line(exc)}") from None
        rows = [Variant("float32", model, notes=notes)]
        makers = {"fp16": lambda t: make_fp16(model, t), "dynamic-int8": lambda t: make_dynamic_int8(prepared, t),
                  "static-int8": lambda t: make_static_int8(prepared, t, input_sets)}
        for kind in kinds:
            step(f"making {kind}")
            target = out_dir / f"{model.stem}.{kind}{SUFFIX}"
            rows.append(produce(kind, lambda t=target, k=kind: makers[k](t), target, quiet_libraries))
    return rows
