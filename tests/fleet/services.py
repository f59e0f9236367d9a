"""The fleet tests use the same service launchers as `make demo`: scripts/localfleet.py (on sys.path through
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from localfleet import (  # noqa: F401 - re-exported for the tests and benches
    Agent,
    Collector,
    Influxd,
    Mosquitto,
    Service,
    ServiceError,
    VictoriaMetrics,
    binary,
    edgebench_argv,
    free_port,
    port_open,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
Service.cwd = REPO  # agents started by the tests can load tests.plugins runtimes
