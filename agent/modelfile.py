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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgebench.agent.errors import ModelError, UsageError

TFLITE = "tflite"
ONNX = "onnx"
PTE = "pte"  # an ExecuTorch program (FlatBuffer, file identifier "ET12"), run by executorch.runtime
TORCHSCRIPT = "torchscript"  # a TorchScript archive (torch.jit.save, or the Mobile lite interpreter's .ptl)
PT2 = "pt2"  # a torch.export program (torch.export.save): the source of PyTorch variants, not run as it is
GGUF = "gguf"  # a llama.cpp language model (magic "GGUF", then a little-endian uint32 version)
FORMAT_NAMES = {TFLITE: "TFLite", ONNX: "ONNX", PTE: "ExecuTorch", TORCHSCRIPT: "TorchScript", PT2: "torch.export",
                GGUF: "GGUF"}
_EXTENSIONS = {".tflite": TFLITE, ".lite": TFLITE, ".onnx": ONNX, ".pte": PTE, ".pt": TORCHSCRIPT,
               ".ptl": TORCHSCRIPT, ".jit": TORCHSCRIPT, ".pt2": PT2, ".gguf": GGUF}
GGUF_VERSIONS = (2, 3)  # what llama.cpp reads (version 1 was dropped in 2023)
GGUF_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata key/value count
ZIP_MAGIC = b"PK\x03\x04"  # PyTorch's archives (TorchScript, torch.export, torch.save) are zip files


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
    # ExecuTorch programs are FlatBuffers too, with identifier "ET" and a two-digit schema version ("ET12").
    if len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit():
        return PTE
    if head[:4] == b"GGUF":
        return GGUF
    # ONNX is a protobuf ModelProto; exporters write field 1 (ir_version, varint) first: tag byte 0x08.
    if head[:1] == b"\x08":
        return ONNX
    return None


def _check_pte_header(path: Path, head: bytes, size: int) -> None:
    """ExecuTorch's extended header ("eh00" after the identifier) gives the program's size and where its segments
    start: a file shorter than either was cut off."""
    if head[8:12] != b"eh00" or len(head) < 32:
        return  # programs without the extended header: executorch.runtime checks the rest
    program_size, segment_base = struct.unpack_from("<QQ", head, 16)
    if program_size > size or segment_base > size:
        raise ModelError(f"{path} is a truncated ExecuTorch program ({size} bytes; its header says "
                         f"{max(program_size, segment_base)} or more)")


def _check_gguf_header(path: Path, head: bytes, size: int) -> None:
    """A GGUF file's fixed header: a version llama.cpp reads, and counts a file of this size can hold (a cut-off or
    garbled header would otherwise reach llama.cpp, which says only that loading failed). A file cut off further
    in is refused by llama.cpp's own size checks (the runtime's load error names it)."""
    if size < GGUF_HEADER.size:
        raise ModelError(f"{path} is a truncated GGUF file ({size} bytes: shorter than its {GGUF_HEADER.size}-byte "
                         "header)")
    _, version, tensors, pairs = GGUF_HEADER.unpack_from(head, 0)
    if version not in GGUF_VERSIONS:
        raise ModelError(f"{path} is GGUF version {version}; llama.cpp reads versions "
                         f"{', '.join(map(str, GGUF_VERSIONS))}")
    if tensors == 0 or tensors > size // 32 or pairs > size // 12:  # a tensor's info or a pair takes that much
        raise ModelError(f"{path} has a damaged GGUF header ({tensors} tensors, {pairs} metadata entries in "
                         f"{size} bytes)")


def archive_records(path: str | os.PathLike) -> set[str]:
    """The record names of a PyTorch zip archive, under its one top folder (``code/...``, ``bytecode.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path} is a damaged zip archive, not a readable PyTorch model ({exc})") from None
    return {name.split("/", 1)[1] for name in names if "/" in name}


def _torch_archive_kind(path: Path) -> str:
    """Which of PyTorch's zip archives ``path`` is, by the records under its one top folder: torch.export writes
    ``archive_format``, TorchScript ``code/`` and ``constants.pkl`` (the lite interpreter's also ``bytecode.pkl``),
    and torch.save only ``data.pkl`` (a state_dict or a pickled module: weights without a program to run)."""
    records = archive_records(path)
    if "archive_format" in records:
        return PT2
    if "constants.pkl" in records or any(name.startswith("code/") for name in records):
        return TORCHSCRIPT
    if "data.pkl" in records:
        raise ModelError(f"{path} is a torch.save pickle (a state_dict or a pickled module), not a model edgebench "
                         "can run: save it with torch.jit.save (TorchScript), torch.export.save (.pt2) or as an "
                         "ExecuTorch .pte")
    raise ModelError(f"{path} is a zip archive but not a PyTorch model (no TorchScript code, no torch.export program)")


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
    sniffed = _torch_archive_kind(path) if head.startswith(ZIP_MAGIC) else _sniff(head, size)
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if sniffed is None:
        expected = f" (named {path.suffix} but its content is not)" if by_extension else ""
        raise ModelError(f"{path} is not a TFLite, ONNX, ExecuTorch, PyTorch or GGUF model{expected}: first bytes "
                         f"{head[:8].hex(' ')}")
    if sniffed == PTE:
        _check_pte_header(path, head, size)
    if sniffed == GGUF:
        _check_gguf_header(path, head, size)
    if sniffed == TFLITE:
        root_offset = struct.unpack_from("<I", head, 0)[0]
        if root_offset + 4 > size or size < 32:
            raise ModelError(f"{path} is a truncated TFLite file ({size} bytes; its header points past the end)")
    return ModelFile(path=path.resolve(), format=sniffed, size_bytes=size)
