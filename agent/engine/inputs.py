"""Input tensors for a run: shapes resolved from the model's signature plus user overrides, data generated
to fit each dtype, or loaded from ``.npy``/``.npz`` files, image files (engine/images.py) or literal values the user
gives.

Everything here is runtime-independent: plugins describe inputs as TensorSpec and receive numpy arrays.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from edgebench.agent.engine import images
from edgebench.agent.errors import InputError, UsageError, first_line
from edgebench.agent.modelfile import file_problem
from edgebench.agent.tensors import ANY_RANK, TensorSpec

Shape = Tuple[int, ...]
# One input tensor may hold at most this much data. Larger is a typo (x=100000x100000x100000), not a
# benchmark: refusing it beats a MemoryError or an allocator abort in the middle of the run.
MAX_INPUT_BYTES = 2**31
# What np.load raises on a file that is not what it should be (BadZipFile: "PK" then garbage).
NUMPY_LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


@dataclass
class InputSource:
    """Where one input's data comes from: a .npy/.npz or image file, a literal value, or generated (the default)."""

    kind: str  # "file", "value", "zeros", "ones", "random"
    file: Optional[Path] = None
    value: Optional[float] = None
    image: Optional[str] = None  # set once the file was read as an image: its layout, size and values
    note: Optional[str] = None  # set when a file's data was converted: real values quantized for the input

    def describe(self) -> str:
        if self.kind == "file" and self.image:
            return f"image:{self.file} ({self.image})"
        if self.kind == "file":
            return f"file:{self.file}" + (f" ({self.note})" if self.note else "")
        if self.kind == "value":
            return f"value:{self.value:g}"
        return self.kind


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.rpartition("=")
    if not sep or not value or not name:
        raise UsageError(f"{flag} {text!r}: expected NAME=VALUE")
    return name, value


def check_size(name: str, shape: Shape, dtype: Optional[np.dtype] = None) -> None:
    """Refuse a shape whose data would exceed MAX_INPUT_BYTES (one byte per element while the dtype is unknown)."""
    elements = math.prod(shape)
    if elements * (dtype.itemsize if dtype else 1) > MAX_INPUT_BYTES:
        count = f"{elements:.3g}" if elements < 1e300 else f"about 1e{len(str(elements)) - 1}"
        what = f"{count} elements" + (f" of {dtype}" if dtype else "")
        raise UsageError(f"--shape {name}={format_shape(shape)}: {what} is more than one input may hold "
                         f"({MAX_INPUT_BYTES // 2**30} GiB)")


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
        check_size(name, dims)
        shapes[name] = dims
    return shapes


def parse_sources(items: Sequence[str]) -> dict[str, InputSource]:
    """``NAME=file.npy`` (or .npz, or an image), ``NAME=16000`` (a literal), ``NAME=zeros|ones|random``; a lone
    ``file.npy`` means the model's only input (resolved later, when the inputs are known: key ``""``)."""
    sources = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep:
            name, value = "", item
        if not value or (sep and not name):
            raise UsageError(f"--input {item!r}: expected NAME=SOURCE (a .npy/.npz or image file, a number, zeros, "
                             f"ones or random)")
        if value in ("zeros", "ones", "random"):
            sources[name] = InputSource(kind=value)
            continue
        try:
            number = float(value)
        except ValueError:
            sources[name] = InputSource(kind="file", file=Path(value))
            continue
        if not math.isfinite(number):
            raise UsageError(f"--input {item!r}: the value must be a finite number")
        sources[name] = InputSource(kind="value", value=number)
    return sources


def literal(spec: TensorSpec, shape: Shape, value: float) -> np.ndarray:
    """``--input NAME=<number>`` as the input's dtype; a number the dtype cannot hold is an error, not wrapped."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value != int(value) or not info.min <= value <= info.max:
            raise InputError(f"--input {spec.name}={value:g}: input {spec.name!r} is {dtype}, which holds integers "
                             f"from {info.min} to {info.max}")
    elif dtype.kind == "f" and abs(value) > np.finfo(dtype).max:
        raise InputError(f"--input {spec.name}={value:g}: too large for input {spec.name!r} ({dtype})")
    elif dtype.kind not in "fb":
        raise InputError(f"--input {spec.name}={value:g}: input {spec.name!r} has dtype {dtype}, not a number")
    return np.full(shape, value, dtype=dtype)


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


def _numpy_format(path: Path) -> Optional[str]:
    """"npy" or "npz" from the first bytes; None for anything else, which np.load would try to unpickle."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    return "npy" if head == b"\x93NUMPY" else "npz" if head[:4] == b"PK\x03\x04" else None


def load_npy(path: Path, spec: TensorSpec, source: Optional[InputSource] = None) -> np.ndarray:
    """A .npy (or .npz) file's array for input ``spec``; float data for a quantized integer input is taken as real
    values and quantized with the input's scale and zero point (as compare feeds such a model), noted in ``source``."""
    problem = file_problem(path)
    if problem == "not found":
        raise InputError(f"input {spec.name!r}: file not found: {path}")
    if problem:
        raise InputError(f"input {spec.name!r}: {path} {problem}")
    try:
        if _numpy_format(path) is None:
            raise ValueError("no NumPy header, and not an image: JPEG, PNG, BMP, GIF or WebP")
        loaded = np.load(path, allow_pickle=False)
        array = loaded if isinstance(loaded, np.ndarray) else _npz_array(loaded, path, spec.name)
    except NUMPY_LOAD_ERRORS as exc:
        raise InputError(f"input {spec.name!r}: {path} is not a readable .npy file ({first_line(exc)})") from None
    target = np.dtype(spec.dtype)
    if array.dtype.kind == "f" and target.kind in "iu" and spec.is_quantized:
        if not np.isfinite(array).all():
            raise InputError(f"input {spec.name!r}: {path} holds NaN or infinite values")
        array = quantize(array.astype(np.float64), spec)
        if source is not None:
            source.note = f"real values quantized: scale {spec.scale:g}, zero point {spec.zero_point or 0}"
    if array.dtype != target:
        if not np.can_cast(array.dtype, target, casting="same_kind"):
            raise InputError(f"input {spec.name!r}: {path} has dtype {array.dtype}, the model expects {target}")
        array = array.astype(target)
    if not shape_fits(array.shape, spec.shape):
        raise InputError(f"input {spec.name!r}: {path} has shape {format_shape(array.shape)}, the model expects "
                         f"{format_shape(spec.shape)}")
    return array


def _npz_array(archive, path: Path, name: str) -> np.ndarray:
    """The array of an .npz given to one input: its only array, else the one named after the input (so one archive
    can feed every input of a model: ``--input a=data.npz --input b=data.npz``)."""
    with archive:
        names = list(archive.files)
        if len(names) == 1 or name in names:
            return archive[names[0] if len(names) == 1 else name]
    raise InputError(f"input {name!r}: {path} holds several arrays ({', '.join(names) or 'none'}), none named "
                     f"{name!r}: name one after the input, or give a single-array .npz or .npy file")


def load_npz(path: str, flag: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz given to ``flag`` (--eval, --calibration): finite numbers along a first axis."""
    problem = file_problem(Path(path))
    if problem:
        raise InputError(f"{flag} {path} {problem}")
    try:
        kind = _numpy_format(Path(path))
        if kind != "npz":
            raise ValueError("a single .npy array, not an .npz archive" if kind else "not a zip archive")
        with np.load(path, allow_pickle=False) as loaded:
            data = dict(loaded)
    except NUMPY_LOAD_ERRORS as exc:
        raise InputError(f"{flag} {path}: not a readable .npz file ({first_line(exc)})") from None
    for name, array in data.items():
        if array.dtype.kind not in "biuf" or array.ndim == 0 or not np.isfinite(array).all():
            raise InputError(f"{flag} {path}: {name!r} holds {array.dtype} {format_shape(array.shape)}, not finite "
                             f"numeric samples along the first axis")
    return data


def shape_fits(shape: Sequence[int], model_shape: Sequence) -> bool:
    if tuple(model_shape) == (ANY_RANK,):
        return True
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
        if len(override) != len(spec.shape) and tuple(spec.shape) != (ANY_RANK,):
            raise InputError(f"--shape {spec.name}={format_shape(override)} has {len(override)} dimensions, "
                             f"the model's input has {len(spec.shape)} ({format_shape(spec.shape)})")
        return tuple(override)
    if tuple(spec.shape) == (ANY_RANK,):
        raise InputError(f"input {spec.name!r}: the model does not record its shape; give it with --shape "
                         f"{spec.name}=DIMS (like 1x3x224x224) or its data with --input {spec.name}=file.npy")
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
    if kind == "random" and "argument" in spec.extra:  # a non-tensor argument (forward(x, sr: int)): no data fits
        raise InputError(f"input {spec.name!r} takes a value ({spec.extra['argument']}), not tensor data: give it "
                         f"with --input {spec.name}=NUMBER")
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


def is_image_file(path: Path) -> bool:
    """Read as an image rather than as NumPy data: by content (magic bytes), or a name like one for a file that is
    neither (so a corrupt cat.jpg is reported as a bad image, not as a bad .npy)."""
    if file_problem(path) is not None:
        return False  # missing or not a regular file: load_npy says so
    return _numpy_format(path) is None and images.looks_like_image(path)


def load_image(source: InputSource, spec: TensorSpec, index: int, shape: Optional[Shape],
               options: Optional[images.ImageOptions]) -> np.ndarray:
    """An image file for input ``spec``, sized from the model's shape (or --shape, for a dynamic one)."""
    try:
        concrete = resolve_shape(spec, shape)
    except InputError as exc:
        raise InputError(f"--input {spec.name}={source.file}: an image needs the input's size: {exc}") from None
    check_size(spec.name, concrete, np.dtype(spec.dtype))
    array, source.image = images.load(source.file, spec, concrete, index, options or images.ImageOptions(), quantize)
    return array


def _from_file(source: InputSource, spec: TensorSpec, index: int, override: Optional[Shape],
               options: Optional[images.ImageOptions]) -> np.ndarray:
    if is_image_file(source.file):
        return load_image(source, spec, index, override, options)
    array = load_npy(source.file, spec, source)
    if override is not None and tuple(override) != array.shape:
        raise InputError(f"input {spec.name!r}: --shape {format_shape(override)} disagrees with "
                         f"{source.file} ({format_shape(array.shape)})")
    return array


def refuse_images(input_args: Sequence[str], what: str) -> None:
    """Image files are decoded by the Python worker only: an executor that reads .npy itself gets a clear refusal."""
    for name, source in parse_sources(input_args).items():
        if source.kind == "file" and is_image_file(source.file):
            raise InputError(f"--input {(name + '=') if name else ''}{source.file}: {what} takes .npy files, not "
                             f"images; run without it (the Python worker decodes images)")


def build_feeds(specs: Sequence[TensorSpec], shapes: dict[str, Shape], sources: dict[str, InputSource],
                seed: int = 0, image_options: Optional[images.ImageOptions] = None) -> dict[str, np.ndarray]:
    """One array per model input, from files, images, literals or generated data; raises InputError on misfits.
    ``image_options``: how image files become values (engine/images.py; None: the defaults)."""
    _check_names(shapes, specs, "--shape")
    sources = _resolve_unnamed(sources, specs)
    _check_names(sources, specs, "--input")
    rng = np.random.default_rng(seed)
    feeds = {}
    for index, spec in enumerate(specs):
        source = sources.get(spec.name, InputSource(kind="random"))
        if source.kind == "file":
            array = _from_file(source, spec, index, shapes.get(spec.name), image_options)
        else:
            shape = resolve_shape(spec, shapes.get(spec.name))
            check_size(spec.name, shape, np.dtype(spec.dtype))
            if source.kind == "value":
                array = literal(spec, shape, source.value)
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
