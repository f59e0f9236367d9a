"""The InfluxDB names the dashboards query: measurements, tags and fields.

What the collector writes today is documented in docs/fleet.md ("InfluxDB schema"); the release-gate verdicts in
docs/gates.md. ``PROPOSED`` lists what the dashboards also use but nothing writes yet (docs/dashboards.md, "Data the
dashboards expect"): the tests know those panels return no series until the collector and agent write them.
"""

from __future__ import annotations

# ---------------------------------------------------------------- written today

RESULT = "edgebench_result"  # one point per benchmark run (collector, from `result` events)
TELEMETRY = "edgebench_telemetry"  # one point per telemetry sample (collector, from `telemetry` messages)
GATE = "edgebench_gate"  # one point per release-gate verdict (edgebench gate / GET /api/gates/evaluate)

# tags of edgebench_result (edgebench_telemetry has device and the label_* tags)
DEVICE, MODEL, MODEL_SHA, FORMAT, RUNTIME, DELEGATE, THREADS = (
    "device", "model", "model_sha", "format", "runtime", "delegate", "threads")
BOARD_CLASS_LABEL = "label_class"  # the device label class=..., what boards are compared by
REFERENCE = "reference"  # sha256 prefix of the reference model drift was measured against (push --reference)

# fields of edgebench_result beyond the latency statistics
MODEL_SIZE = "model_size_bytes"
DRIFT_MAX_ABS_ERR, DRIFT_COSINE, DRIFT_TOP1 = "drift_max_abs_err", "drift_cosine", "drift_top1_agreement"

# tags of edgebench_gate
GATE_RULE, GATE_MODEL, GATE_BOARD_CLASS, GATE_STATUS = "rule", "model", "board_class", "status"

DEVICE_STATE = "edgebench_device"  # device state from `status` and `heartbeat` messages (collector)

# ---------------------------------------------------------------- proposed (nothing writes them yet)

PROPOSED: dict[str, str] = {}  # everything the dashboards query is written today


def proposed_names(query: str) -> list[str]:
    """The proposed measurements and fields a query uses (quoted, as the dashboards write them)."""
    return [name for name in PROPOSED if f'"{name}"' in query]
