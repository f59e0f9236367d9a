"""Variant makers, one module per model format (the plugin pattern of the runtimes): each makes the float16 / int8
variants of a model of its format with that format's own quantizer and names the runtime that benchmarks them.

A maker module has ``FORMAT``, ``RUNTIME``, ``SUFFIX``, ``KINDS`` (what it can make, in table order),
``CALIBRATED`` (the kinds that need calibration sets), ``check_installed()`` (a UsageError naming the extra to
install) and ``produce_all(model, kinds, out_dir, input_sets, step) -> [Variant]`` (the float model first).

A maker whose source is not itself runnable (a torch.export .pt2) also has ``describe(model) -> (inputs, outputs)``
(TensorSpecs read from the source): the calibration sets are built from it, and the float row ``produce_all`` makes
first (its float32 ExecuTorch program) is the model every variant is compared against."""

from __future__ import annotations

from types import ModuleType

from edgebench.agent.errors import UsageError
from edgebench.agent.modelfile import GGUF, ONNX, PT2, TFLITE, TORCHSCRIPT


def maker_for(model_format: str) -> ModuleType:
    if model_format == ONNX:
        from edgebench.agent.optimize.makers import onnx_variants

        return onnx_variants
    if model_format == TFLITE:
        from edgebench.agent.optimize.makers import tflite_variants

        return tflite_variants
    if model_format == PT2:
        from edgebench.agent.optimize.makers import torch_variants

        return torch_variants
    if model_format == GGUF:
        from edgebench.agent.optimize.makers import gguf_variants

        return gguf_variants
    hint = " (a TorchScript file: give the torch.export program, .pt2, or the module as package.module:factory)" \
        if model_format == TORCHSCRIPT else ""
    raise UsageError(f"variants are made from ONNX, TFLite, torch.export (.pt2) or GGUF models or a PyTorch module "
                     f"(package.module:factory), not {model_format}{hint}")
