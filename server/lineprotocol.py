"""InfluxDB line protocol, written once for everything edgebench sends to InfluxDB (the collector's points, the
release gates' verdicts). Standard library only (orjson, when installed, writes the telemetry hot path's floats).
What the points hold (measurements, tags, typed fields, time) is edgebench.server.schema; ``line`` writes any point,
``indexed_integer_points``, ``float_points`` and ``float_columns`` the many points of one series on the ingest hot
paths.

What InfluxDB 1.x really accepts (checked against influxd 1.6.7 in tests/fleet/test_injection.py):
- measurement names, tag keys, tag values and field keys: ``,``, ``=`` and space are escaped with a backslash;
- a tag value cannot hold a newline (the line ends there: the rest would be parsed as a new point), and a
  backslash is kept literally (``a\\\\b`` is stored as two backslashes) or, at the end of a value, breaks the line.
  So tag text never carries control characters or backslashes: each becomes ``_`` (the protocol already refuses
  them in the fields that become tags; this is the last line of defence);
- string field values: ``"`` and ``\\`` are escaped; any other character, newlines included, is stored as is.
"""

from __future__ import annotations

import math
import re
from itertools import repeat
from typing import Any, Iterable, Optional, Sequence

try:  # the telemetry hot path formats floats with orjson when installed (edgebench[server]): C, several times faster
    from orjson import dumps as _json_dumps
except ImportError:  # pragma: no cover - repr, value by value
    _json_dumps = None

UNSAFE_IN_TAGS = re.compile(r"[\x00-\x1f\x7f\\]")


def escape_tag(text: str) -> str:
    """A measurement name, tag key, tag value or field key."""
    return UNSAFE_IN_TAGS.sub("_", text).replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_value(value: Any) -> Optional[str]:
    """A field value in line protocol (booleans, integers with ``i``, finite floats, strings); None to omit."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return string_field(value)
    return None


def tag_text(tags: dict) -> str:
    """``,k=v`` for each tag with a value, sorted (InfluxDB's canonical order)."""
    return "".join(f",{escape_tag(str(k))}={escape_tag(str(v))}" for k, v in sorted(tags.items())
                   if v is not None and str(v) != "")


def series(measurement: str, tags: dict) -> str:
    """A point's series key (measurement and tags), escaped: build it once for the many points of one series."""
    return escape_tag(measurement) + tag_text(tags)


def line(measurement: str, tags: dict, fields: dict, ts_ns: int) -> Optional[str]:
    """One point; None if no field has a value."""
    field_text = ",".join(f"{escape_tag(k)}={v}" for k, v in
                          ((k, field_value(raw)) for k, raw in fields.items()) if v is not None)
    if not field_text:
        return None
    return f"{series(measurement, tags)} {field_text} {int(ts_ns)}"


# ---------------------------------------------------------------- hot paths: many points of one series

def indexed_integer_points(series_key: str, field: str, values: Sequence[int], ts_ns: int) -> list[str]:
    """One point per value (protocol-checked integers) at ``ts_ns`` plus its index in ns: a result's raw latency
    samples, up to 10,000 a result, so the series key and the field key are escaped once."""
    prefix = f"{series_key} {escape_tag(field)}="
    return [f"{prefix}{value}i {ts_ns + index}" for index, value in enumerate(values)]


def float_points(series_key: str, rows: Iterable[tuple[Iterable[tuple[str, float]], int]]) -> list[str]:
    """One point per ``(fields, ts_ns)`` row whose field keys need no escaping ([a-z][a-z0-9_]*: protocol-checked
    reading names) and whose values are finite numbers (also protocol-checked): the telemetry ingest hot path."""
    return [f"{series_key} {','.join([f'{k}={v!r}' if type(v) is float else f'{k}={float(v)!r}' for k, v in fields])}"
            f" {ts_ns}" for fields, ts_ns in rows]


def float_columns(series_key: str, keys: Sequence[str], columns: Iterable[Sequence[float]],
                  times_ns: Iterable[int]) -> Optional[list[str]]:
    """``float_points`` for rows that all hold ``keys``, in that order, given as one column of values per key: each
    column's values written by orjson in one call (JSON and line protocol write a finite double alike; ``1e16``
    where repr writes ``1e+16``, ``5`` for an integer where repr of its float writes ``5.0``: InfluxDB reads the same
    floats), the lines joined by C-level maps: the telemetry ingest hot path, about a third cheaper than repr value
    by value. None when orjson is not installed or cannot write a value (an integer beyond 64 bits): then
    ``float_points``."""
    if _json_dumps is None:
        return None
    try:
        fields = [map(f"{key}=".__add__, _json_dumps(column).decode()[1:-1].split(","))
                  for key, column in zip(keys, columns)]
    except TypeError:  # orjson.JSONEncodeError (a TypeError): an integer beyond 64 bits
        return None
    return list(map(" ".join, zip(repeat(series_key), map(",".join, zip(*fields)), map(str, times_ns))))
