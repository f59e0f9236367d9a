"""GGUF variants through llama.cpp's own quantize API (``llama_model_quantize``), benchmarked by the llamacpp runtime.

Which types make sense depends on the source. A float source (F32, F16, BF16) gets the whole ladder, Q8_0 down to
Q2_K. A quantized source (the registry's models are already 4-bit) gets only the types smaller than itself, made by
requantizing (llama.cpp's allow-requantize: dequantized, then quantized again). That is an experiment, and each such
row says so: the error of both quantizations adds up, so it is not what the same type made from a float source
would give. Sizes are ordered by llama.cpp's own table (tools/quantize: each type's size for Llama-3-8B).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from edgebench.agent.errors import ModelError, UsageError
from edgebench.agent.modelfile import GGUF
from edgebench.agent.optimize.makers.base import Variant, produce

FORMAT = GGUF
RUNTIME = "llamacpp"
SUFFIX = ".gguf"
KINDS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
CALIBRATED: tuple[str, ...] = ()
# llama.cpp's quantize tool lists each type with its file size for Llama-3-8B (GB): what "smaller" means here
SIZE_8B = {"F32": 26.0, "F16": 14.0, "BF16": 14.0, "Q8_0": 7.96, "Q6_K": 6.14, "Q5_1": 5.65, "Q5_K_M": 5.33,
           "Q5_0": 5.21, "Q5_K_S": 5.21, "Q4_1": 4.78, "Q4_K_M": 4.58, "Q4_K_S": 4.37, "Q4_0": 4.34,
           "Q3_K_L": 4.03, "Q3_K_M": 3.74, "Q3_K_S": 3.41, "Q2_K": 2.96}
FLOAT_TYPES = ("F32", "F16", "BF16")
_FTYPE_PREFIXES = ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_")


def check_installed() -> None:
    from edgebench.agent.runtimes.llamacpp import LlamaCppRuntime

    reason = LlamaCppRuntime.unavailable_reason()
    if reason:
        raise UsageError(reason)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """llama.cpp logs through the runtime's callback (to ``logging`` at debug): nothing reaches the terminal."""
    yield


def ftype_names(llama_cpp) -> dict[int, str]:
    """llama.cpp's file types by number (``LLAMA_FTYPE_MOSTLY_Q4_1`` = 3 -> ``Q4_1``), from the bindings' own
    constants."""
    names = {}
    for attribute in dir(llama_cpp):
        for prefix in _FTYPE_PREFIXES:
            if attribute.startswith(prefix):
                names[int(getattr(llama_cpp, attribute))] = attribute[len(prefix):]
    return names


def source_type(model: Path) -> Optional[str]:
    """The source's quantization type as its metadata says (``general.file_type``), None when it does not say."""
    from edgebench.agent.runtimes.llamacpp import LlamaLog, bindings

    llama_cpp = bindings()
    LlamaLog(llama_cpp)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # the metadata and vocabulary, not the weights
    handle = llama_cpp.llama_model_load_from_file(os.fsencode(model), params)
    if not handle:
        raise ModelError(f"llama.cpp could not read {model}")
    try:
        value = ctypes.create_string_buffer(32)
        if llama_cpp.llama_model_meta_val_str(handle, b"general.file_type", value, len(value)) < 0:
            return None
        return ftype_names(llama_cpp).get(int(value.value.decode() or -1))
    finally:
        llama_cpp.llama_model_free(handle)


def ladder(source: Optional[str], kinds: Sequence[str]) -> tuple[list[str], list[str]]:
    """The kinds worth making from this source, and the notes on why some are not (a quantized source: only the
    types smaller than itself)."""
    if source is None or source in FLOAT_TYPES or source not in SIZE_8B:
        return list(kinds), []
    smaller = [kind for kind in kinds if SIZE_8B[kind] < SIZE_8B[source]]
    skipped = [kind for kind in kinds if kind not in smaller]
    notes = [f"{', '.join(skipped)} not made: not smaller than the {source} source"] if skipped else []
    return smaller, notes


def quantize(source: Path, target: Path, kind: str, requantize: bool) -> list[str]:
    """One variant through ``llama_model_quantize``; its notes (how many tensors llama.cpp had to quantize to another
    type: K-quants need rows that are a multiple of 256)."""
    from edgebench.agent.runtimes.llamacpp import LlamaLog, bindings

    llama_cpp = bindings()
    logger = LlamaLog(llama_cpp, keep=lambda line: "fallback" in line)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.allow_requantize = requantize
    params.nthread = os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(target), ctypes.byref(params))
    if code != 0:
        target.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize returned {code}: {logger.last_problem()}")
    count = len(logger.kept)
    plural = "s" if count > 1 else ""
    return [f"{count} tensor{plural} quantized to another type than {kind} (llama.cpp's fallback: rows that are not "
            "a multiple of its block)"] if count else []


def produce_all(model: Path, kinds: Sequence[str], out_dir: Path, input_sets: Sequence[dict],
                step: Callable[[str], None]) -> list[Variant]:
    """The source first (the reference every variant is compared with), then each type worth making from it."""
    source = source_type(model)
    wanted, notes = ladder(source, kinds)
    base = Variant(source or "source", model, notes=[*notes])
    requantize = source is not None and source not in FLOAT_TYPES
    rows = [base]
    for kind in wanted:
        step(f"quantizing to {kind}" + (f" (requantized from {source})" if requantize else ""))
        target = out_dir / f"{model.stem}.{kind}{SUFFIX}"
        row = produce(kind, lambda kind=kind, target=target: quantize(model, target, kind, requantize), target,
                      quiet_libraries)
        if requantize:
            row.notes.insert(0, f"requantized from {source}: an experiment (both quantizations' error adds up; the "
                                "same type made from a float source would be closer to it)")
        rows.append(row)
    return rows
