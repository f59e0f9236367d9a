"""Runtime plugins. Built-in: ``litert`` (LiteRT / tflite-runtime, .tflite) and ``onnxruntime`` (.onnx).

A third-party runtime is named as ``package.module:ClassName`` (a Runtime subclass) and loaded the same way.
``--runtime native`` is not a plugin but an executor (agent/engine/executors/native.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional

from edgebench.agent.errors import RuntimeUnavailable, UsageError
from edgebench.agent.runtimes.names import ALIASES, BUILTIN, DEFAULT_FOR_FORMAT, no_runtime_reason

if TYPE_CHECKING:  # base imports numpy: the package itself stays light (the protocol and the daemon read names)
    from edgebench.agent.runtimes.base import Runtime

__all__ = ["ALIASES", "BUILTIN", "DEFAULT_FOR_FORMAT", "choose_runtime", "default_runtime", "runtime_class"]


def _import(target: str) -> type[Runtime]:
    from edgebench.agent.runtimes.base import Runtime

    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"runtime plugin {target!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise UsageError(f"runtime plugin {target!r} is not a edgebench Runtime subclass")
    return cls


def runtime_class(name: str) -> type[Runtime]:
    name = ALIASES.get(name, name)
    if name in BUILTIN:
        return _import(BUILTIN[name])
    if ":" in name:
        return _import(name)
    raise UsageError(f"unknown runtime {name!r}; choose one of: {', '.join(BUILTIN)} (or module:Class)")


def default_runtime(model_format: str) -> str:
    """The runtime a model of this format runs on when none is asked for; a format no runtime runs is refused."""
    if model_format not in DEFAULT_FOR_FORMAT:  # a torch.export program: a source to lower, not a program to run
        raise UsageError(no_runtime_reason(model_format))
    return DEFAULT_FOR_FORMAT[model_format]


def choose_runtime(model_format: str, requested: Optional[str]) -> type[Runtime]:
    """The runtime plugin for a model: the requested one, else the default for its format."""
    cls = runtime_class(requested or default_runtime(model_format))
    if model_format not in cls.formats:
        raise UsageError(f"runtime {cls.name!r} cannot run {model_format} models (it runs: {', '.join(cls.formats)})")
    reason = cls.unavailable_reason()
    if reason:
        raise RuntimeUnavailable(reason)
    return cls
