"""The registry's gate_verdicts table (migration 5) on both backends: verdicts of one evaluation in one
transaction, read back newest first, a missing value kept as null."""

from __future__ import annotations

from edgebench.server.registry import MIGRATIONS, SCHEMA_VERSION


def _verdict(rule: str, status: str, value: float | None) -> dict:
    return {"rule": rule, "model": "m.tflite", "board_class": "rpi 5", "config": "litert xnnpack", "status": status,
            "value": value, "message": f"{rule} {status}"}


def test_verdicts_are_kept_and_read_back_newest_first(registries):
    first, second = registries(), registries()  # two collectors of one registry see the same history
    assert first.verdicts() == []
    first.add_verdicts([_verdict("a", "pass", 0.5), _verdict("b", "missing", None)], 1000.0)
    second.add_verdicts([_verdict("a", "fail", 2.5)], 2000.0)
    rows = first.verdicts()
    assert [(v["rule"], v["status"], v["value"], v["recorded"]) for v in rows] == [
        ("a", "fail", 2.5, 2000.0), ("b", "missing", None, 1000.0), ("a", "pass", 0.5, 1000.0)]
    assert rows[0] == {"id": rows[0]["id"], "recorded": 2000.0, **_verdict("a", "fail", 2.5)}
    assert second.verdicts(limit=2) == rows[:2]


def test_the_verdicts_table_is_a_migration_of_its_own():
    (step,) = [m for m in MIGRATIONS if "gate_verdicts" in m.sql]
    assert step.version == SCHEMA_VERSION == 5
