"""The telemetry hot path writes columns through orjson (server/lineprotocol.float_columns); whatever the values,
its lines carry the same series, the same times and the same floats as the value-by-value writer (float_points),
and a message it cannot take (keys in another order, an integer beyond 64 bits) goes the value-by-value way."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from edgebench.agent.fleet import protocol as p
from edgebench.server import influx
from edgebench.server import lineprotocol as lp
from edgebench.server import schema as db

NAMES = ("load1", "mem_available_bytes", "temp_max_c", "cpu_freq_hz", "gpu_load")
FINITE = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.integers(min_value=-(2**63), max_value=2**64 - 1),
                   st.integers(min_value=-(10**300), max_value=10**300))  # past 64 bits, within a double's range
READINGS = st.dictionaries(st.sampled_from(NAMES), FINITE, min_size=1, max_size=len(NAMES))


def value_by_value(msg: p.Message, labels: dict) -> list[str]:
    series = lp.series(db.TELEMETRY.name, {db.DEVICE: msg.device, **db.label_tags(labels)})
    return lp.float_points(series, [(s["readings"].items(), db.telemetry_time_ns(s["ts"]))
                                    for s in msg.payload["samples"]])


def parsed(line: str) -> tuple[str, dict[str, float], str]:
    series, fields, ts = line.split(" ")
    return series, {key: float(value) for key, value in (field.split("=") for field in fields.split(","))}, ts


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=9e9), READINGS), min_size=1, max_size=30),
       st.booleans())
def test_columns_and_value_by_value_write_the_same_points(rows, same_keys):
    if same_keys:  # an agent's samples: the same readings in the same order, the hot path
        keys = list(rows[0][1])
        rows = [(ts, {key: readings.get(key, 1.5) for key in keys}) for ts, readings in rows]
    msg = p.Message("dev-1", p.TELEMETRY, {"samples": [{"ts": ts, "readings": readings} for ts, readings in rows]})
    fast, slow = influx.telemetry_points(msg, {"class": "rpi5"}), value_by_value(msg, {"class": "rpi5"})
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert parsed(a) == parsed(b), (a, b)
        assert all(math.isfinite(v) for v in parsed(a)[1].values())


def test_the_hot_path_is_taken_and_left_when_it_must():
    samples = [{"ts": 1.0, "readings": {"load1": 0.5, "temp_max_c": 40}},
               {"ts": 2.0, "readings": {"load1": 0.25, "temp_max_c": 41.5}}]
    series = lp.series(db.TELEMETRY.name, {db.DEVICE: "d"})
    columns = lp.float_columns(series, ("load1", "temp_max_c"), [(0.5, 0.25), (40, 41.5)], [1000, 2000])
    assert columns == [f"{series} load1=0.5,temp_max_c=40 1000", f"{series} load1=0.25,temp_max_c=41.5 2000"]
    assert lp.float_columns(series, ("load1",), [(2**70,)], [1]) is None  # beyond orjson's 64-bit integers
    reordered = [samples[0], {"ts": 2.0, "readings": {"temp_max_c": 41.5, "load1": 0.25}}]
    lines = influx.telemetry_points(p.Message("d", p.TELEMETRY, {"samples": reordered}), {})
    assert lines[1].split(" ")[1] == "temp_max_c=41.5,load1=0.25"  # value by value: each sample's own order
