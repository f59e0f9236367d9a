"""Identify a model file by its content, before any runtime touches it.

A runtime handed random bytes may crash or print a cryptic message, so the obvious cases (missing,
empty, not a model, truncated flatbuffer) are caught here with a message that names the problem.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgebench.agent.errors import ModelError, UsageError

TFLITE = "tflite"
ONNX = "onnx"
_EXTENSIONS = {".tflite": TFLITE, ".lite": TFLITE, ".onnx": ONNX}


@dataclass
class ModelFile:
    path: Path
    format: str
    size_bytes: int

    def sha256(self) -> str:
        return file_sha256(self.path)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "name": self.path.name, "format": self.format,
                "size_bytes": self.size_bytes, "sha256": self.sha256()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sniff(head: bytes, size: int) -> str | None:
    # TFLite is a FlatBuffer with file identifier "TFL3" at bytes 4..8.
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return TFLITE
    # ONNX is a protobuf ModelProto; exporters write field 1 (ir_version, varint) first: tag byte 0x08.
    if head[:1] == b"\x08":
        return ONNX
    return None


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as a file, or None. Checked before opening: open() on a FIFO waits for a
    writer forever and a device never ends, so both must be refused, not read."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
        return f"is not a regular file (it is {kind})"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def load_toml(path: Path, what: str = "config file") -> dict:
    """A TOML file edgebench reads (config, gates): any problem is one UsageError naming the file."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10 boards
        import tomli as tomllib
    problem = file_problem(path)  # a FIFO would block open() forever
    if problem:
        raise UsageError(f"{what} {path} {problem}")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes before it parses: a binary file fails here
        raise UsageError(f"{what} {path} is not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from None


def identify(path: str | os.PathLike) -> ModelFile:
    """Return the model's format and size, or raise ModelError naming what is wrong with the file."""
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise ModelError(f"model file {path} {problem}")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path} is empty")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from exc
    sniffed = _sniff(head, size)
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if sniffed is None:
        expected = f" (named {path.suffix} but its content is not)" if by_extension else ""
        raise ModelError(f"{path} is not a TFLite or ONNX model{expected}: first bytes {head[:8].hex(' ')}")
    if sniffed == TFLITE:
        root_offset = struct.unpack_from("<I", head, 0)[0]
        if root_offset + 4 > size or size < 32:
            raise ModelError(f"{path} is a truncated TFLite file ({size} bytes; its header points past the end)")
    return ModelFile(path=path.resolve(), format=sniffed, size_bytes=size)
