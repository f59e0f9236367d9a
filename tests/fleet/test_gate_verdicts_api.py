"""GET /api/v1/gates/verdicts: the verdicts recorded through POST /api/gates/verdicts (edgebench gate --server
--record), kept in the registry as well as written to InfluxDB, served newest first to the read role with a
bounded ``limit``; what the registry or InfluxDB would refuse is refused before anything is written."""

from __future__ import annotations

import json
import types

import pytest

from edgebench.server.influx import InfluxError

from .test_auth import Served


class FakeInflux:
    """The collector's InfluxDB writer: keeps the lines, or refuses them as an unreachable server does."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.down = False

    def write(self, lines: list[str]) -> None:
        if self.down:
            raise InfluxError("connection refused")
        self.lines.extend(lines)


@pytest.fixture
def served(tmp_path):
    server = Served(tmp_path)
    server.influx = FakeInflux()
    server.api.collector = types.SimpleNamespace(influx=server.influx)
    yield server
    server.close()


def _verdict(rule: str, status: str, value: float | None = 1.5, **extra) -> dict:
    return {"rule": rule, "model": "sine_*", "result_model": "sine_float.tflite", "board_class": "x86",
            "config": "litert", "status": status, "value": value, "message": f"{rule}: {status}", **extra}


def _record(served: Served, verdicts: list[dict], role: str = "submit") -> tuple[int, dict]:
    body = json.dumps({"schema": "edgebench.gates/1", "verdicts": verdicts}).encode()
    status, _, answer = served.call("POST", "/api/gates/verdicts", served.tokens[role], body)
    return status, json.loads(answer)


def _listed(served: Served, query: str = "", role: str | None = "read") -> tuple[int, dict]:
    token = served.tokens[role] if role else None
    status, _, answer = served.call("GET", "/api/v1/gates/verdicts" + query, token)
    return status, json.loads(answer)


def test_recorded_verdicts_are_served_newest_first_to_the_read_role(served):
    assert _listed(served) == (200, {"verdicts": []})
    assert _record(served, [_verdict("p90 budget", "pass"), _verdict("p50 vs v1", "missing", None,
                                                                     board_class=None, result_model=None)]) \
        == (201, {"written": 2})
    assert _record(served, [_verdict("p90 budget", "fail", 9.25)]) == (201, {"written": 1})
    assert len(served.influx.lines) == 3  # the dashboard's points, as before

    status, answer = _listed(served)
    assert status == 200
    rows = answer["verdicts"]
    assert [(v["rule"], v["status"]) for v in rows] == [("p90 budget", "fail"), ("p50 vs v1", "missing"),
                                                         ("p90 budget", "pass")]
    newest, missing, _ = rows
    assert {k: newest[k] for k in ("model", "board_class", "config", "value", "message")} == {
        "model": "sine_float.tflite", "board_class": "x86", "config": "litert", "value": 9.25,
        "message": "p90 budget: fail"}
    # as InfluxDB's tags say it: the rule's pattern where no result was judged, "unlabelled" where no class
    assert (missing["model"], missing["board_class"], missing["value"]) == ("sine_*", "unlabelled", None)
    assert newest["recorded"] >= missing["recorded"] and newest["id"] > missing["id"]
    assert _listed(served, "?limit=1")[1]["verdicts"] == [newest]
    assert _listed(served, "?limit=1000")[1]["verdicts"] == rows


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=-1", "?limit=ten", "?limit=1e3"])
def test_the_limit_is_bounded(served, query):
    status, answer = _listed(served, query)
    assert status == 400 and answer["error"] == "limit must be an integer from 1 to 1000"


def test_reading_verdicts_needs_a_read_token(served):
    status, answer = _listed(served, role=None)
    assert status == 401 and "needs a token with the read role" in answer["error"]
    status, _, _ = served.call("GET", "/api/v1/gates/verdicts", "ebt_not-a-token")
    assert status == 401
    assert _record(served, [_verdict("p90 budget", "pass")], role="read")[0] == 403  # recording stays submit's


@pytest.mark.parametrize("bad, error", [
    ({"value": "fast"}, "value must be a finite number or null"),
    ({"value": True}, "value must be a finite number or null"),
    ({"value": 1e400}, "value must be a finite number or null"),  # JSON's 1e400: infinity
    ({"board_class": ["x86"]}, "board_class must be a string"),
    ({"result_model": 7}, "result_model must be a string"),
    ({"status": "flaky"}, "status must be one of"),
])
def test_a_verdict_neither_store_could_keep_is_refused_before_anything_is_written(served, bad, error):
    status, answer = _record(served, [_verdict("ok", "pass"), {**_verdict("bad", "pass"), **bad}])
    assert status == 400 and error in answer["error"], answer
    assert _listed(served)[1]["verdicts"] == [] and served.influx.lines == []


def test_influxdb_down_is_a_503_and_the_registry_keeps_the_verdicts(served):
    served.influx.down = True
    status, answer = _record(served, [_verdict("p90 budget", "pass")])
    assert status == 503 and "kept in the registry" in answer["error"]
    assert [v["rule"] for v in _listed(served)[1]["verdicts"]] == ["p90 budget"]
