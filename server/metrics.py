"""Prometheus text-format metrics of the collector (``GET /metrics``): counters, gauges and summaries."""

from __future__ import annotations

import threading
from typing import Optional

HELP = {
    "edgebench_messages_received_total": ("counter", "MQTT messages taken from the broker"),
    "edgebench_messages_stored_total": ("counter", "messages stored (registry + InfluxDB) and acknowledged"),
    "edgebench_dead_letters_total": ("counter", "messages refused for good (invalid, or a point InfluxDB refused)"),
    "edgebench_dead_letters_suppressed_total": ("counter", "dead letters counted but not stored: a device over its "
                                                "dead-letter rate"),
    "edgebench_duplicates_total": ("counter", "outbox messages seen before (published again by their agent, or "
                                   "redelivered): acknowledged, not written again"),
    "edgebench_acks_sent_total": ("counter", "outbox messages acknowledged to their devices (stored or refused)"),
    "edgebench_oldest_unacked_seconds": ("gauge", "age of the oldest message held unacknowledged (a stall grows it)"),
    "edgebench_points_written_total": ("counter", "points written to InfluxDB"),
    "edgebench_influx_write_errors_total": ("counter", "failed InfluxDB writes (each retried)"),
    "edgebench_influx_write_seconds": ("summary", "duration of successful InfluxDB batch writes"),
    "edgebench_ingest_delay_seconds": ("summary", "time from receipt to acknowledgement, per message"),
    "edgebench_buffer_depth": ("gauge", "messages received and not yet stored"),
    "edgebench_mqtt_connected": ("gauge", "1 while connected to the broker"),
    "edgebench_http_unauthorized_total": ("counter", "HTTP requests refused with 401: no token, a malformed "
                                          "Authorization header, or an unknown or revoked token"),
    "edgebench_http_forbidden_total": ("counter", "HTTP requests refused with 403: a token whose role is too low"),
    "edgebench_jobs_submitted_total": ("counter", "jobs created through the HTTP API"),
    "edgebench_models_uploaded_total": ("counter", "model uploads"),
    "edgebench_device_credentials_total": ("counter", "devices' MQTT credentials made, reset or revoked through the "
                                           "HTTP API (the broker admin account)"),
    "edgebench_broker_admin_errors_total": ("counter", "devices' credentials not changed: the broker unreachable, "
                                            "or the Dynamic Security plugin refused"),
    "edgebench_model_requests_total": ("counter", "valid model-request messages served over MQTT"),
    "edgebench_model_chunk_bytes_total": ("counter", "model bytes sent in model-chunk messages over MQTT"),
    "edgebench_model_requests_refused_total": ("counter", "model-requests not served: the device is not online, or "
                                               "over its rate of model bytes"),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._summaries: dict[str, list[float]] = {}  # name -> [count, sum, max] (max for /healthz)

    def inc(self, name: str, by: float = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + by

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = value

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            count, total, peak = self._summaries.get(name, [0, 0.0, 0.0])
            self._summaries[name] = [count + 1, total + value, max(peak, value)]

    def value(self, name: str) -> float:
        with self._lock:
            return self._values.get(name, 0)

    def render(self, gauges: Optional[dict] = None) -> str:
        """``gauges``: values computed at scrape time (name -> value), rendered with the others."""
        with self._lock:
            values, summaries = dict(self._values), {k: list(v) for k, v in self._summaries.items()}
        values.update(gauges or {})
        lines = []
        for name, (kind, text) in HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "summary":
                count, total, peak = summaries.get(name, [0, 0.0, 0.0])
                lines += [f"{name}_count {count}", f"{name}_sum {total:.6f}"]
            else:
                lines.append(f"{name} {_number(values.get(name, 0))}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Exact integers for counters (``:g`` would round 1234567 to 1.23457e+06), shortest repr otherwise."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
