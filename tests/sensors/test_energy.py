"""Energy math on known numbers."""

from __future__ import annotations

import pytest

from edgebench.agent.engine.physics import energy

S = 1_000_000_000  # ns per second


def test_trapezoid_constant_and_ramp():
    assert energy.trapezoid_j([(0, 5.0), (S, 5.0), (2 * S, 5.0)]) == pytest.approx(10.0)
    assert energy.trapezoid_j([(0, 0.0), (S, 10.0)]) == pytest.approx(5.0)
    assert energy.trapezoid_j([(S, 10.0), (0, 0.0)]) == pytest.approx(5.0), "order does not matter"
    assert energy.trapezoid_j([(0, 3.0)]) == 0.0


def test_window_edges_are_interpolated():
    points = [(t * S, 2.0 * t + 2.0) for t in range(4)]  # P = 2t + 2
    clipped = energy.clip(points, S // 2, 5 * S // 2)
    assert clipped[0] == (S // 2, pytest.approx(3.0)) and clipped[-1] == (5 * S // 2, pytest.approx(7.0))
    # integral of 2t + 2 from 0.5 to 2.5 = 10
    assert energy.trapezoid_j(clipped) == pytest.approx(10.0)
    assert energy.clip(points, -S, 10 * S) == points, "no extrapolation past the samples"
    assert energy.clip(points, S // 4, S // 2) == [(S // 4, pytest.approx(2.5)), (S // 2, pytest.approx(3.0))]


def test_mean_peak_and_baseline():
    points = [(0, 1.0), (S, 3.0), (2 * S, 1.0)]
    assert energy.mean_power_w(points, 0, 2 * S) == pytest.approx(2.0)
    assert energy.idle_baseline_w(points, 0, S) == pytest.approx(2.0)
    assert energy.peak_power_w(points, 0, 2 * S) == 3.0
    assert energy.mean_power_w([(5, 4.0)], 0, 10) == 4.0
    assert energy.mean_power_w(points, 5 * S, 6 * S) is None


def test_energy_per_inference_net_of_idle():
    idle = [(t * S // 10, 2.0) for t in range(11)]  # 1 s at 2 W
    run = [(S + t * S // 10, 7.0) for t in range(21)]  # 2 s at 7 W
    points = idle + run
    idle_w = energy.idle_baseline_w(points, 0, S)
    assert idle_w == pytest.approx(2.0)
    result = energy.energy_per_inference(points, S, 3 * S, inferences=100, idle_w=idle_w, source="x/power")
    assert result.window_s == pytest.approx(2.0)
    assert result.energy_j == pytest.approx(14.0)
    assert result.net_energy_j == pytest.approx(10.0)
    assert result.energy_per_inference_mj == pytest.approx(100.0)
    assert (result.avg_w, result.peak_w) == (pytest.approx(7.0), 7.0)
    assert result.to_dict()["source"] == "x/power"


def test_energy_per_inference_edge_cases():
    assert energy.energy_per_inference([(0, 5.0)], 0, S, 10) is None
    result = energy.energy_per_inference([(0, 5.0), (S, 5.0)], 0, S, 0)
    assert result.energy_per_inference_mj is None and result.net_energy_j == pytest.approx(5.0)


def test_counter_energy_with_wrap():
    top = 262143.32885  # J (RAPL max_energy_range_uj / 1e6)
    points = [(0, top - 3.0), (S, top - 1.0), (2 * S, 4.0), (3 * S, 9.0)]  # +2, +5 (wrap), +5
    assert energy.unwrap_counter(points, top) == [(0, 0.0), (S, pytest.approx(2.0)), (2 * S, pytest.approx(7.0)),
                                                  (3 * S, pytest.approx(12.0))]
    assert energy.counter_energy_j(points, top, 0, 3 * S) == pytest.approx(12.0)
    assert energy.counter_energy_j(points, top, S // 2, 5 * S // 2) == pytest.approx(1.0 + 5.0 + 2.5)
    assert energy.counter_power(points, top) == [(S, pytest.approx(2.0)), (2 * S, pytest.approx(5.0)),
                                                 (3 * S, pytest.approx(5.0))]
    assert energy.counter_energy_j([(0, 1.0)], top, 0, S) == 0.0
