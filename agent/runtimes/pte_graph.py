"""What an ExecuTorch program (.pte) runs, read from the file itself with nothing but the standard library: a board
may carry executorch's runtime without its exporter (``executorch.exir``), which owns the only Python deserializer.

The program is a FlatBuffer (executorch/schema/program.fbs): each execution plan (method) has a chain of
instructions, kernel calls (the runtime's own operators) and delegate calls (a backend's compiled subgraph). An
XNNPACK delegate's payload is itself a FlatBuffer (backends/xnnpack/serialization/schema.fbs) whose ``xnodes`` are
the XNNPACK operators it runs; other backends' payloads are opaque, so each of their calls counts as one node.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

# program.fbs field numbers (a table's n-th field, unions taking two: their type, then their value)
_PROGRAM_PLANS, _PROGRAM_INLINE_DATA, _PROGRAM_SEGMENTS = 1, 3, 4
_PLAN_NAME, _PLAN_CONTAINER, _PLAN_CHAINS, _PLAN_OPERATORS, _PLAN_DELEGATES = 0, 1, 5, 6, 7
_CHAIN_INSTRUCTIONS = 2
_KERNEL_CALL, _DELEGATE_CALL = 1, 2  # InstructionArguments union types
_SEGMENT_LOCATION = 1  # DataLocation.SEGMENT
# XNNPACK's XNodeUnion, in schema order (type 1 is XNNAdd); a newer type reads as its number.
XNN_NODE_TYPES = (
    "Add", "FullyConnected", "Softmax", "Sigmoid", "StaticTranspose", "Clamp", "Conv2d", "Div",
    "StaticResizeBilinear2D", "StaticConstantPad", "AvgPooling2d", "Minimum", "DepthwiseConv2d", "MaxPooling2d",
    "Multiply", "Subtract", "Floor", "Convert", "GlobalAvgPooling2d", "StaticReshape", "ArgMaxPooling2d",
    "SquareRoot", "Ceiling", "Hardswish", "LeakyReLU", "Maximum", "Negate", "Square", "ELU", "Abs", "PReLU",
    "Concatenate2", "Concatenate3", "Concatenate4", "StaticSlice", "ScaledDotProductAttention",
    "BatchMatrixMultiply", "Concatenate5", "ConvTranspose2d", "ReciprocalSquareRoot", "Log", "Gelu", "Tanh", "Exp",
    "Sin", "Copy", "Cos",
)
XNNPACK_ID = "XnnpackBackend"
_MAX_PAYLOAD_HEAD = 64 << 20  # an XNNPACK graph (without its weights) larger than this is not read


class PteFormatError(ValueError):
    """The file is not a readable ExecuTorch program."""


class _Table:
    """A FlatBuffer table at ``pos`` of ``buf``: just the accessors this reader needs."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - _unpack("<i", buf, pos)
        self.vsize = _unpack("<H", buf, self.vtable)

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        return _unpack("<H", self.buf, self.vtable + slot) if slot < self.vsize else 0

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        offset = self._field(index)
        return _unpack(fmt, self.buf, self.pos + offset) if offset else default

    def _target(self, index: int) -> Optional[int]:
        offset = self._field(index)
        if not offset:
            return None
        at = self.pos + offset
        return at + _unpack("<I", self.buf, at)

    def table(self, index: int) -> Optional[_Table]:
        at = self._target(index)
        return _Table(self.buf, at) if at is not None else None

    def string(self, index: int) -> str:
        at = self._target(index)
        if at is None:
            return ""
        return self.buf[at + 4: at + 4 + _unpack("<I", self.buf, at)].decode("utf-8", "replace")

    def raw(self, index: int) -> bytes:
        at = self._target(index)
        return b"" if at is None else self.buf[at + 4: at + 4 + _unpack("<I", self.buf, at)]

    def tables(self, index: int) -> list[_Table]:
        at = self._target(index)
        if at is None:
            return []
        items = range(at + 4, at + 4 + 4 * _unpack("<I", self.buf, at), 4)
        return [_Table(self.buf, item + _unpack("<I", self.buf, item)) for item in items]


def _unpack(fmt: str, buf: bytes, at: int) -> int:
    try:
        return struct.unpack_from(fmt, buf, at)[0]
    except struct.error:
        raise PteFormatError(f"an offset points outside the program ({at})") from None


def _root(buf: bytes) -> _Table:
    return _Table(buf, _unpack("<I", buf, 0))


@dataclass
class Call:
    """One instruction that runs something: a kernel (``op``: ``aten::add.out``) or a delegate call."""

    index: int  # the instruction's position in its chain
    op: str
    delegate: Optional[int] = None  # the delegate's index in the plan, for a delegate call
    inner: list = field(default_factory=list)  # the XNNPACK operators the call runs; empty when unknown


@dataclass
class Plan:
    name: str
    calls: list  # list[Call], in execution order
    delegates: list  # list[str], the backend id of each of the plan's delegates
    input_names: list  # the inputs' names when the program was exported with keyword arguments, else []


def read_plans(handle: BinaryIO) -> list[Plan]:
    """Every method of the program, read from an open .pte; raises PteFormatError for a file it cannot parse."""
    head = handle.read(32)
    if len(head) < 8 or head[4:6] != b"ET":
        raise PteFormatError("no ExecuTorch file identifier")
    program_size, segment_base = _extended_header(head)
    handle.seek(0)
    buf = handle.read(program_size) if program_size else handle.read()
    program = _root(buf)
    inline = program.tables(_PROGRAM_INLINE_DATA)
    segments = program.tables(_PROGRAM_SEGMENTS)
    plans = []
    for plan in program.tables(_PROGRAM_PLANS):
        delegates = plan.tables(_PLAN_DELEGATES)
        payloads = [_payload(d, inline, segments, segment_base, handle) for d in delegates]
        plans.append(Plan(plan.string(_PLAN_NAME), _calls(plan, payloads), [d.string(0) for d in delegates],
                          _input_names(plan)))
    return plans


def _extended_header(head: bytes) -> tuple[int, int]:
    """(program size, segment base) from the "eh00" header; (0, 0) without one: the whole file is the program."""
    if head[8:12] != b"eh00" or len(head) < 32:
        return 0, 0
    return struct.unpack_from("<QQ", head, 16)


def _calls(plan: _Table, payloads: list[Optional[list]]) -> list[Call]:
    operators = [_operator_name(op) for op in plan.tables(_PLAN_OPERATORS)]
    calls = []
    for chain in plan.tables(_PLAN_CHAINS):
        for index, instruction in enumerate(chain.tables(_CHAIN_INSTRUCTIONS)):
            kind = instruction.scalar(0, "<B")
            args = instruction.table(1)
            if args is None or kind not in (_KERNEL_CALL, _DELEGATE_CALL):
                continue  # moves, frees and jumps run nothing
            number = args.scalar(0, "<i")
            if kind == _KERNEL_CALL:
                op = operators[number] if 0 <= number < len(operators) else f"operator#{number}"
                calls.append(Call(index, op))
            else:
                inner = payloads[number] if 0 <= number < len(payloads) else None
                calls.append(Call(index, "delegate", number, inner or []))
    return calls


def _operator_name(op: _Table) -> str:
    name, overload = op.string(0), op.string(1)
    return f"{name}.{overload}" if overload else name


def _input_names(plan: _Table) -> list[str]:
    """The keyword names of the inputs, from the pytree spec the exporter stored (``encoded_inp_str``): a model
    called with keyword arguments keeps them there; positional ones have none."""
    import json

    container = plan.table(_PLAN_CONTAINER)
    if container is None:
        return []
    try:
        spec = json.loads(container.string(0))
        args, kwargs = spec[1]["children_spec"]
        if args["children_spec"] or kwargs["type"] != "builtins.dict":
            return []
        return [str(name) for name in json.loads(kwargs["context"])]
    except (ValueError, KeyError, TypeError, IndexError):
        return []


def _payload(delegate: _Table, inline: list[_Table], segments: list[_Table], segment_base: int,
             handle: BinaryIO) -> Optional[list]:
    """The XNNPACK operators of one delegate, or None (another backend, or a payload this reader cannot parse)."""
    if delegate.string(0) != XNNPACK_ID:
        return None
    reference = delegate.table(1)
    if reference is None:
        return None
    location, index = reference.scalar(0, "<b"), reference.scalar(1, "<I")
    try:
        if location == _SEGMENT_LOCATION:
            if not 0 <= index < len(segments) or not segment_base:
                return None
            offset, size = segments[index].scalar(0, "<Q"), segments[index].scalar(1, "<Q")
            data = _read_graph(handle, segment_base + offset, size)
        else:
            data = inline[index].raw(0) if 0 <= index < len(inline) else b""
            data = _strip_xnn_header(data)
        return _xnodes(data) if data else None
    except PteFormatError:
        return None


def _read_graph(handle: BinaryIO, start: int, size: int) -> bytes:
    """The XNNPACK graph's FlatBuffer from a segment, without the weights that follow it ("XH00" header)."""
    handle.seek(start)
    head = handle.read(30)
    if head[4:8] == b"XH00":
        offset, length = struct.unpack_from("<II", head, 10)
        if length > _MAX_PAYLOAD_HEAD or offset + length > size:
            return b""
        handle.seek(start + offset)
        return handle.read(length)
    if size > _MAX_PAYLOAD_HEAD:
        return b""
    handle.seek(start)
    return handle.read(size)


def _strip_xnn_header(data: bytes) -> bytes:
    if data[4:8] == b"XH00":
        offset, length = struct.unpack_from("<II", data, 10)
        return data[offset: offset + length]
    return data


def _xnodes(graph: bytes) -> list[str]:
    if graph[4:6] != b"XN":
        return []
    nodes = []
    for node in _root(graph).tables(1):
        kind = node.scalar(0, "<B")
        nodes.append(XNN_NODE_TYPES[kind - 1] if 0 < kind <= len(XNN_NODE_TYPES) else f"xnode#{kind}")
    return nodes
