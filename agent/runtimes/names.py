"""The built-in runtimes by name, without importing any of them (standard library only): the wire protocol, the
agent daemon (which never imports numpy or a runtime) and the plugin loader all read this one table."""

from __future__ import annotations

import importlib.util

# name -> "module:Class"; imported lazily so that choosing one runtime never imports another.
BUILTIN = {
    "litert": "edgebench.agent.runtimes.litert:LiteRTRuntime",
    "onnxruntime": "edgebench.agent.runtimes.ort:OnnxRuntime",
    "executorch": "edgebench.agent.runtimes.executorch_runtime:ExecuTorchRuntime",
    "torchscript": "edgebench.agent.runtimes.torchscript:TorchScriptRuntime",
    "llamacpp": "edgebench.agent.runtimes.llamacpp:LlamaCppRuntime",
}
# name -> the Python modules it can run on (any one of them): what `installed()` looks for
REQUIRES = {"litert": ("ai_edge_litert", "tflite_runtime"), "onnxruntime": ("onnxruntime",),
            "executorch": ("executorch",), "torchscript": ("torch",), "llamacpp": ("llama_cpp",)}
ALIASES = {"tflite": "litert", "tflite-runtime": "litert", "ort": "onnxruntime", "onnx": "onnxruntime",
           "et": "executorch", "pte": "executorch", "jit": "torchscript", "pytorch-mobile": "torchscript",
           "llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "gguf": "llamacpp"}
# model format (modelfile) -> the runtime that runs it; a torch.export program (pt2) is a source for variants only
DEFAULT_FOR_FORMAT = {"tflite": "litert", "onnx": "onnxruntime", "pte": "executorch", "torchscript": "torchscript",
                      "gguf": "llamacpp"}
# runtime -> the model formats (agent/modelfile.py) it runs: read by the plugins themselves and by the collector, which
# refuses a job whose runtime cannot run its model before any board gets it.
FORMATS = {"litert": ("tflite",), "onnxruntime": ("onnx",), "executorch": ("pte",), "torchscript": ("torchscript",),
           "llamacpp": ("gguf",)}
# runtimes whose models generate tokens: their benchmark is a generation (prefill, then decode), not one inference
GENERATES = ("llamacpp",)
# The chain each built-in runtime takes: LiteRT delegates (--delegate, --delegate-option) or ONNX Runtime execution
# providers (--providers). Given to the other runtime, a chain is refused (Runtime.check_options), and a fleet job
# matrix gives each job only its runtime's (server/api.py).
# ExecuTorch and TorchScript take none: a .pte carries its delegates inside; TorchScript runs torch's CPU kernels.
# llama.cpp takes none either: its backends are chosen when it is built (docs/deploy.md).
CHAIN_OPTION = {"litert": "delegates", "onnxruntime": "providers"}


def generates(runtime: str) -> bool:
    """Whether this built-in runtime (any of its names) runs language models, whose benchmark is a generation."""
    return ALIASES.get(runtime, runtime) in GENERATES


def no_runtime_reason(model_format: str) -> str:
    """What to do with a model of a format no runtime runs as it is (a torch.export program)."""
    return (f"a {model_format} model is not run as it is: make ExecuTorch programs from it with `edgebench variants "
            "MODEL.pt2` (or lower it with executorch.exir) and benchmark or push the .pte")


def installed() -> list[str]:
    """Built-in runtimes whose library is installed here (found, not imported)."""
    return [name for name in BUILTIN if any(importlib.util.find_spec(module) for module in REQUIRES[name])]
