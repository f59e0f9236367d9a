"""Image files as model inputs: recognised by content, decoded with Pillow (the ``images`` extra), laid out and sized
for the model's input, and given the values the model expects.

- Layout, from the input's shape: ``[N,H,W,C]`` when its last dimension is 1 or 3 (TFLite's and most mobile models'
  layout), else ``[N,C,H,W]`` when its second is (PyTorch-exported ONNX models); rank 3 likewise without the batch.
  C = 3 is RGB, C = 1 grayscale. A batch above 1 gets the same image in every row.
- Size: a center crop to the input's aspect ratio, then Pillow's bilinear resize to H x W (which, when shrinking,
  averages over the source pixels instead of skipping them), after applying the EXIF orientation of a photo.
- Values: a uint8 input gets the raw pixels 0..255 (the convention of uint8 image models: EfficientNet-Lite0 int8's
  quantization maps them to its real range itself); a float input gets (pixel - mean) / std; an int8 (or other
  quantized) input gets that normalised value quantized with the tensor's own scale and zero point. mean and std are
  ``--image-mean``/``--image-std`` when given, else the model's TFLite metadata (NormalizationOptions), else 127.5 and
  127.5 (pixels to [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgebench.agent.engine import tflite_metadata
from edgebench.agent.errors import InputError, first_line
from edgebench.agent.modelfile import file_problem
from edgebench.agent.tensors import TensorSpec

DEFAULT_MEAN = (127.5,)
DEFAULT_STD = (127.5,)
# Magic bytes of the formats recognised as images (a file is an image by its content, not its suffix).
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"), (b"GIF87a", "GIF"),
         (b"GIF89a", "GIF"))
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
INSTALL = "pip install 'edgebench[images]' (Pillow)"


@dataclass
class ImageOptions:
    """How pixels become values: --image-mean/--image-std (None: from the model's metadata, else the defaults), and
    the model whose TFLite metadata may say."""

    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None
    model: Optional[str] = None

    def normalization(self, index: int, channels: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(mean, std, where they came from) for input ``index``, one value per channel."""
        mean, std, origin = self.mean, self.std, "--image-mean/--image-std"
        if mean is None and std is None:
            meta = tflite_metadata.read(self.model) if self.model else None
            found = meta.normalization[index] if meta and index < len(meta.normalization) else None
            mean, std = found or (DEFAULT_MEAN, DEFAULT_STD)
            origin = "model metadata" if found else "default"
        return (_per_channel(mean or DEFAULT_MEAN, channels, "--image-mean"),
                _per_channel(std or DEFAULT_STD, channels, "--image-std"), origin)


def _per_channel(values: Sequence[float], channels: int, flag: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise InputError(f"{flag} has {len(values)} values; the input has {channels} channel(s): give one or "
                         f"{channels}")
    return np.broadcast_to(np.asarray(values, dtype=np.float64), (channels,))


def image_kind(path: Path) -> Optional[str]:
    """"JPEG", "PNG", "BMP", "GIF" or "WEBP" from the file's first bytes; None for anything else."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in MAGIC if head.startswith(magic)), None)


def looks_like_image(path: Path) -> bool:
    """An image by content, or a file named like one (so a corrupt cat.jpg is reported as a bad image)."""
    return image_kind(path) is not None or path.suffix.lower() in SUFFIXES


def layout(shape: Sequence[int]) -> tuple[str, int, int, int]:
    """(layout, channels, height, width) of an image input's concrete shape; InputError when it is no image."""
    if len(shape) in (3, 4):
        dims = shape[1:] if len(shape) == 4 else shape
        if dims[-1] in (1, 3):
            return ("NHWC" if len(shape) == 4 else "HWC"), dims[2], dims[0], dims[1]
        if dims[0] in (1, 3):
            return ("NCHW" if len(shape) == 4 else "CHW"), dims[0], dims[1], dims[2]
    raise InputError(f"shape {'x'.join(map(str, shape))} is not an image layout ([N,H,W,C] or [N,C,H,W] with C 1 "
                     f"or 3)")


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise InputError(f"image inputs need Pillow: {INSTALL}") from None
    return Image, ImageOps


def decode(path: Path, channels: int, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as uint8 [H, W, C], center-cropped to the aspect of H x W and resized; and its original size."""
    problem = file_problem(path)
    if problem:
        raise InputError(f"{path}: {problem}" if problem != "not found" else f"image not found: {path}")
    Image, ImageOps = _pillow()
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # a phone photo's rotation lives in its EXIF, not its pixels
            image = image.convert("RGB" if channels == 3 else "L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path} is not a readable image ({first_line(exc)})") from None
    size = image.size
    # Cropped first: resize(box=...) would blend in pixels from outside the box at its edges.
    box = tuple(round(v) for v in _center_crop(size, width, height))
    resized = image.crop(box).resize((width, height), Image.BILINEAR)
    pixels = np.asarray(resized, dtype=np.uint8)
    return (pixels[:, :, None] if pixels.ndim == 2 else pixels), size


def _center_crop(size: tuple[int, int], width: int, height: int) -> tuple[float, float, float, float]:
    """The largest centered box of the source with the target's aspect ratio (nothing is stretched)."""
    src_w, src_h = size
    if src_w * height > src_h * width:  # wider than the target: crop the sides
        crop_w = src_h * width / height
        return ((src_w - crop_w) / 2, 0, (src_w + crop_w) / 2, src_h)
    crop_h = src_w * height / width
    return (0, (src_h - crop_h) / 2, src_w, (src_h + crop_h) / 2)


Quantize = Callable[[np.ndarray, TensorSpec], np.ndarray]  # inputs.quantize (passed in: inputs imports this module)


def values(pixels: np.ndarray, spec: TensorSpec, mean: np.ndarray, std: np.ndarray, quantize: Quantize
           ) -> tuple[np.ndarray, str]:
    """Pixels as the input's dtype, and how (for the feed's description)."""
    dtype = np.dtype(spec.dtype)
    if dtype == np.uint8:
        return pixels, "raw pixels"
    real = (pixels.astype(np.float64) - mean) / std
    norm = f"(pixel - {_fmt(mean)}) / {_fmt(std)}"
    if dtype.kind == "f":
        return real.astype(dtype), norm
    if dtype.kind in "iu" and spec.is_quantized:
        return quantize(real, spec), f"{norm}, quantized"
    if dtype.kind in "iu" and np.iinfo(dtype).min <= 0 and np.iinfo(dtype).max >= 255:
        return pixels.astype(dtype), "raw pixels"
    raise InputError(f"input {spec.name!r} is {dtype} without quantization parameters: no way to tell what pixel "
                     f"values it expects; give the data as .npy")


def _fmt(values_: np.ndarray) -> str:
    unique = np.unique(values_)
    return f"{unique[0]:g}" if len(unique) == 1 else "[" + ", ".join(f"{v:g}" for v in values_) + "]"


def load(path: Path, spec: TensorSpec, shape: Sequence[int], index: int, options: ImageOptions,
         quantize: Quantize) -> tuple[np.ndarray, str]:
    """An image file as input ``spec`` (the model's ``index``-th input) of concrete ``shape``; the array and its
    description (``224x224 NHWC, resized from 451x300, raw pixels``: sizes as width x height)."""
    try:
        order, channels, height, width = layout(shape)
    except InputError as exc:
        raise InputError(f"input {spec.name!r}: {path} is an image, but the input's {exc}") from None
    pixels, size = decode(path, channels, height, width)
    mean, std, origin = options.normalization(index, channels)
    array, how = values(pixels, spec, mean, std, quantize)
    if order.endswith("CHW"):
        array = np.transpose(array, (2, 0, 1))
    if len(shape) == 4:
        array = np.broadcast_to(array[None], tuple(shape)).copy()
    resized = "" if size == (width, height) else f", resized from {size[0]}x{size[1]}"
    source = "" if how == "raw pixels" else f" ({origin})"
    return array, f"{width}x{height} {order}{resized}, {how}{source}"  # width x height, as image sizes are written


# ---------------------------------------------------------------- folders

def files_in(folder: Path) -> list[Path]:
    """Every image under ``folder`` (subfolders too), by content, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and image_kind(p) is not None)


def class_index(name: str, labels: Optional[Sequence[str]]) -> Optional[int]:
    """A class folder's index: its name as a number, else its line in the labels (case and ``_`` vs space aside)."""
    if name.isdigit():
        return int(name)
    if not labels:
        return None

    def key(text: str) -> str:
        return " ".join(text.replace("_", " ").lower().split())

    exact = {label: i for i, label in reversed(list(enumerate(labels)))}
    if name in exact:
        return exact[name]
    loose = {key(label): i for i, label in reversed(list(enumerate(labels)))}
    return loose.get(key(name))


def read_labels(path: str) -> list[str]:
    """``--labels FILE``: one class name per line, line N (from 0) naming class N."""
    problem = file_problem(Path(path))
    if problem:
        raise InputError(f"--labels {path} {problem}")
    try:
        return tflite_metadata.label_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--labels {path}: not a readable text file ({first_line(exc)})") from None


def labels_for(labels_file: Optional[str], models: Sequence[str]) -> Optional[list[str]]:
    """The class names: --labels FILE, else the first of ``models`` that carries labels in its TFLite metadata."""
    if labels_file:
        return read_labels(labels_file)
    return next((found for found in map(tflite_metadata.labels, models) if found), None)


def image_folder(folder: Path, labels: Optional[Sequence[str]], flag: str) -> list[tuple[Path, int]]:
    """(image, class index) for each image of an ImageFolder layout, ``folder/<class>/<image>``."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{flag} {folder}: expected one folder per class ({folder}/<class>/<image>); it has none")
    samples = []
    for directory in classes:
        index = class_index(directory.name, labels)
        if index is None:
            hint = ("give --labels FILE (one label per line) or name the folder by its class index" if not labels
                    else "not one of the model's labels; name the folder by its class index or give --labels FILE")
            raise InputError(f"{flag} {folder}: class folder {directory.name!r}: {hint}")
        samples += [(path, index) for path in files_in(directory)]
    if not samples:
        raise InputError(f"{flag} {folder}: no image files in its class folders")
    return samples
