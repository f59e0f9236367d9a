"""Variant makers, one module per model format (the plugin pattern of the runtimes): each makes the float16 / int8
variants of a model of its format with that format's own quantizer and names the runtime that benchmarks them.

A maker module has ``FORMAT``, ``RUNTIME``, ``SUFFIX``, ``KINDS`` (what it can make, in table order),
``CALIBRATED`` (the kinds that need calibration sets), ``check_installed()`` (a UsageError naming the extra to
install) and ``produce_all(model, kinds, out_dir, input_sets, step) -> [Variant]`` (the float model first)."""

from __future__ import annotations

from types import ModuleType

from edgebench.agent.errors import UsageError
from edgebench.agent.modelfile import ONNX, TFLITE


def maker_for(model_format: str) -> ModuleType:
    if model_format == ONNX:
        from edgebench.agent.optimize.makers import onnx_variants

        return onnx_variants
    if model_format == TFLITE:
        from edgebench.agent.optimize.makers import tflite_variants

        return tflite_variants
    raise UsageError(f"variants are made from ONNX or TFLite models, not {model_format}")
