"""Input tensors for a run: shapes resolved from the model's signature plus user overrides, data generated
to fit each dtype, or loaded from ``.npy`` files / literal values the user gives.

Everything here is runtime-independent: plugins describe inputs as TensorSpec and receive numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import InputError, UsageError
from .tensors import TensorSpec

Shape = Tuple[int, ...]


@dataclass
class InputSource:
    """Where one input's data comes from: a .npy file, a literal value, or generated (the default)."""

    kind: str  # "file", "value", "zeros", "ones", "random"
    file: Optional[Path] = None
    value: Optional[float] = None

    def describe(self) -> str:
        if self.kind == "file":
            return f"file:{self.file}"
        if self.kind == "value":
            return f"value:{self.value:g}"
        return self.kind


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.rpartition("=")
    if not sep or not value:
        raise UsageError(f"{flag} {text!r}: expected NAME=VALUE")
    return name, value


def parse_shapes(items: Sequence[str]) -> dict[str, Shape]:
    """``["x=1x3x224x224", "len=1"]`` -> ``{"x": (1, 3, 224, 224), "len": (1,)}``; ``x=`` scalar is ``()``."""
    shapes = {}
    for item in items:
        name, text = _split_assignment(item, "--shape")
        if text.lower() in ("scalar", "()"):
            shapes[name] = ()
            continue
        try:
            dims = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
        except ValueError:
            raise UsageError(f"--shape {item!r}: dimensions must be integers like 1x3x224x224") from None
        if any(d < 0 for d in dims):
            raise UsageError(f"--shape {item!r}: dimensions cannot be negative")
        shapes[name] = dims
    return shapes


def parse_sources(items: Sequence[str]) -> dict[str, InputSource]:
    """``NAME=file.npy``, ``NAME=16000`` (a literal), ``NAME=zeros|ones|random``; a lone ``file.npy`` means
    the model's only input (resolved later, when the inputs are known: key ``""``)."""
    sources = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep:
            name, value = "", item
        if value in ("zeros", "ones", "random"):
            sources[name] = InputSource(kind=value)
            continue
        try:
            sources[name] = InputSource(kind="value", value=float(value))
            continue
        except ValueError:
            pass
        sources[name] = InputSource(kind="file", file=Path(value))
    return sources


def _check_names(overrides: dict, specs: Sequence[TensorSpec], flag: str) -> None:
    names = {spec.name for spec in specs}
    for name in overrides:
        if name and name not in names:
            raise InputError(f"{flag} names input {name!r}, but the model's inputs are: "
                             f"{', '.join(sorted(names))}")


def _resolve_unnamed(sources: dict[str, InputSource], specs: Sequence[TensorSpec]) -> dict[str, InputSource]:
    if "" not in sources:
        return sources
    if len(specs) != 1:
        raise InputError(f"--input without a NAME= works only for single-input models; this one has "
                         f"{len(specs)}: {', '.join(s.name for s in specs)}")
    resolved = dict(sources)
    resolved[specs[0].name] = resolved.pop("")
    return resolved


def load_npy(path: Path, spec: TensorSpec) -> np.ndarray:
    if not path.exists():
        raise InputError(f"input {spec.name!r}: file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"input {spec.name!r}: {path} is not a readable .npy file ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"input {spec.name!r}: {path} holds several arrays; give a single-array .npy file")
    target = np.dtype(spec.dtype)
    if array.dtype != target:
        if not np.can_cast(array.dtype, target, casting="same_kind"):
            raise InputError(f"input {spec.name!r}: {path} has dtype {array.dtype}, the model expects {target}")
        array = array.astype(target)
    if not shape_fits(array.shape, spec.shape):
        raise InputError(f"input {spec.name!r}: {path} has shape {format_shape(array.shape)}, the model expects "
                         f"{format_shape(spec.shape)}")
    return array


def shape_fits(shape: Sequence[int], model_shape: Sequence) -> bool:
    if len(shape) != len(model_shape):
        return False
    return all(not isinstance(m, int) or m < 0 or m == s for s, m in zip(shape, model_shape))


def format_shape(shape: Sequence) -> str:
    if len(shape) == 0:
        return "scalar"
    return "x".join(str(d) if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?")
                    for d in shape)


def resolve_shape(spec: TensorSpec, override: Optional[Shape]) -> Shape:
    """The concrete shape to feed. A dynamic leading (batch) dimension defaults to 1, as the runtimes'
    own benchmark tools do; any other dynamic dimension must be given, since no default is safe."""
    if override is not None:
        if len(override) != len(spec.shape):
            raise InputError(f"--shape {spec.name}={format_shape(override)} has {len(override)} dimensions, "
                             f"the model's input has {len(spec.shape)} ({format_shape(spec.shape)})")
        return tuple(override)
    shape = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim >= 0:
            shape.append(dim)
        elif axis == 0:
            shape.append(1)
        else:
            label = f" ({dim!r})" if isinstance(dim, str) else ""
            example = "x".join(str(d) if isinstance(d, int) and d >= 0 else ("1" if i == 0 else "N")
                               for i, d in enumerate(spec.shape))
            raise InputError(f"input {spec.name!r} has a dynamic dimension {axis}{label} in shape "
                             f"{format_shape(spec.shape)}: give it with --shape {spec.name}={example}")
    return tuple(shape)


def generate(spec: TensorSpec, shape: Shape, rng: np.random.Generator, kind: str = "random") -> np.ndarray:
    """Data that fits the dtype: the full range for 8-bit tensors, [0, 1) for floats, small non-negative
    integers for wider ints (they are usually indices or lengths, where large values are out of range)."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "OSU":
        raise InputError(f"input {spec.name!r} has dtype {spec.dtype}: give its data with --input "
                         f"{spec.name}=file.npy")
    if kind in ("zeros", "ones"):
        return (np.zeros if kind == "zeros" else np.ones)(shape, dtype=dtype)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float64).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, size=shape, dtype=dtype)
    return rng.integers(0, 10, size=shape).astype(dtype)


def build_feeds(specs: Sequence[TensorSpec], shapes: dict[str, Shape], sources: dict[str, InputSource],
                seed: int = 0) -> dict[str, np.ndarray]:
    """One array per model input, from files, literals or generated data; raises InputError on misfits."""
    _check_names(shapes, specs, "--shape")
    sources = _resolve_unnamed(sources, specs)
    _check_names(sources, specs, "--input")
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        source = sources.get(spec.name, InputSource(kind="random"))
        if source.kind == "file":
            array = load_npy(source.file, spec)
            override = shapes.get(spec.name)
            if override is not None and tuple(override) != array.shape:
                raise InputError(f"input {spec.name!r}: --shape {format_shape(override)} disagrees with "
                                 f"{source.file} ({format_shape(array.shape)})")
        else:
            shape = resolve_shape(spec, shapes.get(spec.name))
            if source.kind == "value":
                array = np.full(shape, source.value, dtype=np.dtype(spec.dtype))
            else:
                array = generate(spec, shape, rng, source.kind)
        feeds[spec.name] = array
    return feeds


def describe_feeds(feeds: dict[str, np.ndarray], sources: dict[str, InputSource]) -> list[dict]:
    if "" in sources and len(feeds) == 1:  # `--input file.npy` without a name: the model's only input
        sources = {next(iter(feeds)): sources[""]}
    return [{"name": name, "dtype": str(array.dtype), "shape": list(array.shape),
             "source": sources.get(name, InputSource(kind="random")).describe()}
            for name, array in feeds.items()]


def dequantize(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values of a quantized tensor (scale * (q - zero_point)); float tensors pass through as float64."""
    if spec.is_quantized and array.dtype.kind in "iu":
        return (array.astype(np.float64) - (spec.zero_point or 0)) * spec.scale
    return array.astype(np.float64)


def quantize(real: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The inverse of dequantize for the tensor's dtype: round, shift, clip to the integer range."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "iu" and spec.is_quantized:
        info = np.iinfo(dtype)
        q = np.round(real / spec.scale) + (spec.zero_point or 0)
        return np.clip(q, info.min, info.max).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(real), info.min, info.max).astype(dtype)
    return real.astype(dtype)
