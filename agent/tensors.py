"""Plain records describing a model's input and output tensors, shared by every runtime plugin."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Tuple, Union

Dim = Union[int, str, None]  # a fixed size, or a dynamic dimension (its symbolic name, or None if unnamed)
# A spec shape of just this dimension: a tensor whose rank the model does not record (TorchScript's Tensor arguments),
# so --shape (or a file) gives the whole shape.
ANY_RANK = "..."


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "uint8", "int64", ...
    shape: Tuple[Dim, ...]
    # Affine quantization (real = scale * (q - zero_point)); None for float tensors.
    scale: Optional[float] = None
    zero_point: Optional[int] = None
    extra: dict = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None and self.scale > 0

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["shape"] = [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None)
                           for d in self.shape]
        if not record["extra"]:
            del record["extra"]
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TensorSpec:
        shape = tuple(d if d is not None else -1 for d in record["shape"])
        return cls(record["name"], record["dtype"], shape, record.get("scale"), record.get("zero_point"),
                   dict(record.get("extra") or {}))
