"""What a TFLite model's metadata says about its inputs and outputs: the normalisation of an image input (mean and
std) and the file of class labels, read without TensorFlow or tflite-support.

The metadata is a second flatbuffer (schema ``metadata_schema.fbs``, identifier ``M001``) stored in a buffer that the
model's ``metadata`` entry ``TFLITE_METADATA`` points to; its associated files (labels.txt...) are a zip appended to
the model file. The schema's generated Python code ships only in ``tflite-support`` (which pins TensorFlow-era
dependencies), so the few fields read here are read directly: a flatbuffer table is a vtable of field offsets, and
these tables' field numbers are fixed by the schema's compatibility rules (fields are only ever appended).
Anything unexpected (no metadata, a truncated buffer) reads as "no metadata": it is a hint, never an error.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Field numbers, from tflite's schema.fbs and tflite-support's metadata_schema.fbs.
MODEL_BUFFERS, MODEL_METADATA = 4, 6  # Model.buffers, Model.metadata
METADATA_NAME, METADATA_BUFFER = 0, 1  # Metadata.name, Metadata.buffer
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2  # Buffer.data (or, over 2 GB, offset and size in the file)
MM_SUBGRAPHS = 3  # ModelMetadata.subgraph_metadata
SG_INPUTS, SG_OUTPUTS = 2, 3  # SubGraphMetadata.input_tensor_metadata, output_tensor_metadata
TM_PROCESS_UNITS, TM_FILES = 4, 6  # TensorMetadata.process_units, associated_files
PU_OPTIONS_TYPE, PU_OPTIONS = 0, 1  # ProcessUnit.options: a union (its type, then its table)
NORMALIZATION = 1  # ProcessUnitOptions.NormalizationOptions
NORM_MEAN, NORM_STD = 0, 1
FILE_NAME, FILE_TYPE = 0, 2  # AssociatedFile.name, type
TENSOR_AXIS_LABELS = 2  # AssociatedFileType: one label per class of an output


@dataclass
class Metadata:
    """The parts of a model's metadata edgebench uses. ``normalization[i]``: (mean, std) of input i, or None."""

    normalization: list = field(default_factory=list)
    labels_file: Optional[str] = None  # the first output's TENSOR_AXIS_LABELS file, inside the appended zip


class _Reader:
    """Flatbuffer tables over a byte buffer: just the accessors the fields above need."""

    def __init__(self, data) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def root(self, base: int = 0) -> int:
        return base + self.u32(base)

    def field(self, table: int, index: int) -> Optional[int]:
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        size = struct.unpack_from("<H", self.data, vtable)[0]
        if 4 + 2 * index >= size:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + 4 + 2 * index)[0]
        return table + offset if offset else None

    def ref(self, table: int, index: int) -> Optional[int]:
        pos = self.field(table, index)
        return None if pos is None else pos + self.u32(pos)

    def tables(self, table: int, index: int) -> list[int]:
        vector = self.ref(table, index)
        if vector is None:
            return []
        return [vector + 4 + 4 * k + self.u32(vector + 4 + 4 * k) for k in range(self.u32(vector))]

    def string(self, table: int, index: int) -> Optional[str]:
        pos = self.ref(table, index)
        return None if pos is None else bytes(self.data[pos + 4:pos + 4 + self.u32(pos)]).decode()

    def scalar(self, table: int, index: int, fmt: str, default=0):
        pos = self.field(table, index)
        return default if pos is None else struct.unpack_from("<" + fmt, self.data, pos)[0]

    def floats(self, table: int, index: int) -> tuple[float, ...]:
        pos = self.ref(table, index)
        if pos is None:
            return ()
        return struct.unpack_from(f"<{self.u32(pos)}f", self.data, pos + 4)


def _metadata_buffer(reader: _Reader) -> Optional[int]:
    """Where the ModelMetadata flatbuffer starts in the model file, or None without one."""
    model = reader.root()
    buffers = reader.tables(model, MODEL_BUFFERS)
    for entry in reader.tables(model, MODEL_METADATA):
        if reader.string(entry, METADATA_NAME) != "TFLITE_METADATA":
            continue
        buffer = buffers[reader.scalar(entry, METADATA_BUFFER, "I")]
        data = reader.ref(buffer, BUFFER_DATA)
        if data is not None and reader.u32(data):
            return data + 4
        offset = reader.scalar(buffer, BUFFER_OFFSET, "Q")  # a model over 2 GB keeps buffers after the flatbuffer
        return offset or None
    return None


def _normalization(reader: _Reader, tensor: int) -> Optional[tuple]:
    for unit in reader.tables(tensor, TM_PROCESS_UNITS):
        if reader.scalar(unit, PU_OPTIONS_TYPE, "B") == NORMALIZATION:
            options = reader.ref(unit, PU_OPTIONS)
            mean, std = reader.floats(options, NORM_MEAN), reader.floats(options, NORM_STD)
            if mean and std and all(s > 0 for s in std):
                return mean, std
    return None


def _labels_file(reader: _Reader, tensor: int) -> Optional[str]:
    for entry in reader.tables(tensor, TM_FILES):
        if reader.scalar(entry, FILE_TYPE, "b") == TENSOR_AXIS_LABELS:
            return reader.string(entry, FILE_NAME)
    return None


def read(path: str | Path) -> Optional[Metadata]:
    """The metadata of a TFLite model file, or None (no metadata, not a TFLite file, or one it cannot parse)."""
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[4:8] != b"TFL3":
                return None
            reader = _Reader(data)
            start = _metadata_buffer(reader)
            if start is None or data[start + 4:start + 8] != b"M001":
                return None
            subgraphs = reader.tables(reader.root(start), MM_SUBGRAPHS)
            if not subgraphs:
                return Metadata()
            inputs = reader.tables(subgraphs[0], SG_INPUTS)
            outputs = reader.tables(subgraphs[0], SG_OUTPUTS)
            return Metadata(normalization=[_normalization(reader, t) for t in inputs],
                            labels_file=_labels_file(reader, outputs[0]) if outputs else None)
    except (OSError, ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None  # a hint only: a model the runtime can load but this cannot parse just has none


def labels(path: str | Path) -> Optional[list[str]]:
    """The class labels packed in a model file's appended zip (TFLite metadata's associated files): the file the
    metadata names, else the one member whose name says ``label``; None when the model carries none."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            meta = read(path)
            chosen = meta.labels_file if meta and meta.labels_file in names else None
            if chosen is None:
                candidates = [n for n in names if "label" in n.lower() and n.lower().endswith(".txt")]
                chosen = candidates[0] if len(candidates) == 1 else None
            if chosen is None:
                return None
            text = archive.read(chosen).decode("utf-8", errors="replace")
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    return label_lines(text)


def label_lines(text: str) -> list[str]:
    """One label per line, line N (from 0) being class N: blank lines inside count, trailing ones do not."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
