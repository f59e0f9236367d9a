"""The recommendation's rules (agent/optimize/recommend.py) on given rows: budgets, objectives, the float fallback.
The rows are built by hand; tests/test_compare_variants.py checks the rule again on real variants' documents."""

from __future__ import annotations

import pytest

from edgebench.agent.errors import UsageError
from edgebench.agent.optimize.makers.base import Variant
from edgebench.agent.optimize.recommend import Budgets, recommend


class Sized(Variant):
    """A row whose file size is given (the real rows read it from disk)."""

    def __init__(self, name, size, **fields):
        super().__init__(name, **fields)
        self._size = size

    @property
    def size_bytes(self):
        return self._size


def row(name, size, speed=None, ci=None, agreement=None, cosine=0.999, energy=None, error=None):
    report = None if error else {"stats": {}, "physics": {"energy": {"energy_per_inference_mj": energy}}}
    drift = None if error else {"max_abs_err": 0.01, "reference_range": 1.0, "cosine_mean": cosine,
                                "top1_agreement": agreement}
    ratio = {"estimate": speed, "ci": ci} if speed else None
    return Sized(name, size, report=report, drift=drift, speedup_p90=ratio, error=error)


FLOAT = row("float32", 4000, speed=1.0, energy=2.0)


def test_latency_ships_the_fastest_variant_faster_beyond_noise():
    rows = [FLOAT, row("fp16", 2000, 1.05, [0.95, 1.15], 1.0), row("int8", 1000, 1.9, [1.7, 2.1], 0.992),
            row("int4", 500, 2.5, [2.2, 2.8], 0.90)]
    advice = recommend(rows, Budgets())
    assert advice["variant"] == "int8" and advice["within_budgets"] == ["fp16", "int8"]
    assert advice["line"] == ("ship int8: p90 1.90x faster [1.70, 2.10] than float32, 4.0x smaller, top-1 agreement "
                              "99.2% (budget >= 98%)")
    assert advice["failures"]["int4"] == ["top-1 agreement 90.0% < 98%"]


def test_nothing_faster_beyond_noise_ships_the_float_model():
    rows = [FLOAT, row("fp16", 2000, 1.05, [0.95, 1.15], 1.0)]
    advice = recommend(rows, Budgets())
    assert advice["variant"] == "float32"
    assert advice["line"].startswith("ship float32: no variant within the budgets is faster beyond noise (closest: "
                                     "fp16, p90 1.05x faster [0.95, 1.15]")


def test_no_variant_within_the_budgets():
    rows = [FLOAT, row("int8", 1000, 1.9, [1.7, 2.1], cosine=0.95), row("broken", 900, error="could not be produced")]
    advice = recommend(rows, Budgets())
    assert advice["variant"] == "float32"
    assert advice["line"] == "ship float32: no variant meets the budgets; best is int8 (cosine 0.9500 < 0.99)"
    assert advice["failures"]["broken"] == ["could not be produced"]


def test_max_drift_is_judged_against_the_outputs_range():
    drifting = row("int8", 1000, 1.9, [1.7, 2.1])
    drifting.drift["max_abs_err"] = 0.2
    assert recommend([FLOAT, drifting], Budgets(max_drift=0.1))["failures"]["int8"] == [
        "max abs error 20.0% of the output's range > 10.0%"]
    assert recommend([FLOAT, drifting], Budgets(max_drift=0.3))["variant"] == "int8"


def test_size_ships_the_smallest_that_is_not_slower_beyond_noise():
    rows = [FLOAT, row("fp16", 2000, 1.0, [0.9, 1.1]), row("int8", 1000, 0.5, [0.4, 0.6]),
            row("wo-int8", 1100, 0.98, [0.9, 1.05])]
    advice = recommend(rows, Budgets(objective="size"))
    assert advice["variant"] == "wo-int8"


def test_energy_needs_a_power_sensor_else_latency_decides():
    rows = [FLOAT, row("int8", 1000, 1.9, [1.7, 2.1], energy=1.2), row("fp16", 2000, 1.2, [1.1, 1.3], energy=1.0)]
    assert recommend(rows, Budgets(objective="energy"))["variant"] == "fp16"
    unsensed = [row("float32", 4000, 1.0), row("int8", 1000, 1.9, [1.7, 2.1]), row("fp16", 2000, 1.2, [1.1, 1.3])]
    advice = recommend(unsensed, Budgets(objective="energy"))
    assert advice["variant"] == "int8" and advice["line"].endswith("(no power sensor measured energy here: chosen by "
                                                                   "latency)")


@pytest.mark.parametrize("budgets", [Budgets(objective="speed"), Budgets(min_agreement=1.5), Budgets(max_drift=-1)])
def test_bad_budgets_are_usage_errors(budgets):
    with pytest.raises(UsageError):
        budgets.validate()
