"""The fleet under faults, counted by id: synthetic boards (bench/fleetload.py: the agent's real outbox) publish
results and telemetry at a steady rate while the broker, the collector, InfluxDB or a board fails; afterwards every
result (by run id) and every telemetry sample (by seq) is looked up in InfluxDB.

    .venv/bin/python bench/fleet_faults.py [--seconds 30] [--only broker,collector,...] [--json FILE]

Scenarios (each on its own Mosquitto, influxd and collector, started here on free loopback ports):
  broker     broker SIGKILLed 10 s in, started again 3 s later
  collector  collector SIGKILLed 10 s in, started again 10 s later
  influxdb   influxd stopped 10 s in, started again 10 s later
  board      a board's process SIGKILLed 10 s in, started again on the same data dir
  away       collector away from 5 s to 45 s, the broker SIGKILLed and restarted in between
  overload   20 board processes offering 2,000 messages/s in all (100 each: 600 telemetry samples and 10 results a
             second) into Mosquitto's default queue of 1,000 per session; the rate they achieve is printed

The baseline is the outside probe before the collector's acknowledgements (docs/fleet.md): 460/600 results and
4600/6000 telemetry points after a broker restart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # localfleet
sys.path.insert(0, str(REPO / "bench"))

from fleetload import Load  # noqa: E402
from localfleet import Collector, Influxd, Mosquitto, wait_for  # noqa: E402

SCENARIOS = ("broker", "collector", "influxdb", "board", "away", "overload")


class Bed:
    """Mosquitto + influxd + one collector in a temporary directory."""

    def __init__(self, root: Path, broker_extra: str = "allow_anonymous true"):
        self.root = root
        self.broker = Mosquitto(root / "mosquitto", extra=broker_extra)
        self.influxd = Influxd(root / "influxd")
        self.broker.start()
        self.influxd.start()
        self.collector = Collector(root / "collector", self.broker.url, self.influxd.url, "faults")
        self.collector.start()

    def close(self) -> None:
        for service in (self.collector, self.influxd, self.broker):
            service.stop()


def landed(bed: Bed, load: Load) -> dict:
    """Per kind: committed on the boards, rows in InfluxDB, and distinct committed ids among those rows."""
    results = telemetry = distinct_results = distinct_seq = 0
    for device in load.devices:
        rows = bed.influxd.rows("faults", f"SELECT run_id FROM edgebench_result WHERE device = '{device.device}'")
        results += len(rows)
        distinct_results += len({row["run_id"] for row in rows} & set(device.result_ids()))
        rows = bed.influxd.rows("faults", f"SELECT seq FROM edgebench_telemetry WHERE device = '{device.device}'")
        telemetry += len(rows)
        distinct_seq += len({int(row["seq"]) for row in rows} & set(range(device.telemetry_seq)))
    return {"results_committed": load.results(), "results_landed": results, "results_landed_distinct": distinct_results,
            "telemetry_committed": load.telemetry(), "telemetry_landed": telemetry,
            "telemetry_landed_distinct": distinct_seq, **load.counters(),
            "duplicates_dropped_by_collector": bed.collector.metric("edgebench_duplicates_total")}


def run_scenario(name: str, root: Path, seconds: float) -> dict:
    if name == "overload":
        return run_overload(root, seconds)
    bed = Bed(root)
    load = Load(bed.broker.url, root / "devices", ["dev-a", "dev-b"], results_per_s=10, telemetry_per_s=100,
                ack_wait_s=10)
    board = None
    started = time.monotonic()
    try:
        load.start(seconds)
        at = lambda s: time.sleep(max(0.0, started + s - time.monotonic()))  # noqa: E731
        if name == "broker":
            at(10)
            bed.broker.kill()
            at(13)
            bed.broker.start()
        elif name == "collector":
            at(10)
            bed.collector.kill()
            at(20)
            bed.collector.start()
        elif name == "influxdb":
            at(10)
            bed.influxd.stop()
            at(20)
            bed.influxd.start()
        elif name == "board":
            board = board_process(bed, root, seconds)
            at(10)
            board.kill()
            board.wait()
            board = board_process(bed, root, seconds - 10)
        elif name == "away":
            at(5)
            bed.collector.kill()
            at(15)
            bed.broker.kill()
            at(18)
            bed.broker.start()
            at(45)
            bed.collector.start()
        load.produced()
        produced_at = time.monotonic()
        wait_for(load.drained, 600, "every outbox to drain")
        if board is not None:
            board.wait(600)
        figures = landed(bed, load)
        figures["drain_s"] = round(time.monotonic() - produced_at, 1)
        if board is not None:
            figures["board_process"] = board_figures(bed, root)
        return figures
    finally:
        load.close()
        bed.close()


def run_overload(root: Path, seconds: float, boards: int = 20) -> dict:
    """One process per board (one Python process cannot offer 2,000 messages/s); counted from each board's own
    outbox database and from InfluxDB afterwards."""
    bed = Bed(root, "allow_anonymous true\nmax_queued_messages 1000")
    try:
        started = time.monotonic()
        procs = [board_process(bed, root, seconds, f"ov-{i}", results_per_s=10, telemetry_per_s=600, out=True)
                 for i in range(boards)]
        outcomes = [json.loads(proc.communicate(timeout=seconds + 900)[0]) for proc in procs]
        elapsed = time.monotonic() - started
        figures = {"results_committed": 0, "results_landed": 0, "results_landed_distinct": 0, "telemetry_committed": 0,
                   "telemetry_landed": 0, "telemetry_landed_distinct": 0, "resent": 0, "unacked": 0, "refused": 0}
        for outcome in outcomes:
            board = board_figures(bed, root, outcome["device"])
            for key in ("results_committed", "results_landed", "results_landed_distinct"):
                figures[key] += board[key]
            rows = bed.influxd.rows("faults", f"SELECT seq FROM edgebench_telemetry WHERE device = "
                                              f"'{outcome['device']}'")
            figures["telemetry_committed"] += outcome["telemetry"]
            figures["telemetry_landed"] += len(rows)
            figures["telemetry_landed_distinct"] += len({int(row["seq"]) for row in rows} &
                                                        set(range(outcome["telemetry"])))
            for key in ("resent", "unacked", "refused"):
                figures[key] += outcome[key]
        messages = figures["results_committed"] + figures["telemetry_committed"] / 6
        figures["achieved_messages_per_s"] = round(messages / seconds, 1)
        figures["duplicates_dropped_by_collector"] = bed.collector.metric("edgebench_duplicates_total")
        figures["drain_s"] = round(elapsed - seconds, 1)
        return figures
    finally:
        bed.close()


def board_process(bed: Bed, root: Path, seconds: float, device: str = "killed-board", results_per_s: float = 10,
                  telemetry_per_s: float = 0, out: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "bench" / "fleetload.py"), "--mqtt", bed.broker.url,
                             "--device", device, "--data-dir", str(root / device),
                             "--results-per-s", str(results_per_s), "--telemetry-per-s", str(telemetry_per_s),
                             "--seconds", str(seconds), "--ack-wait", "10", "--drain", "600"],
                            stdout=subprocess.PIPE if out else subprocess.DEVNULL, text=True, cwd=REPO)


def board_figures(bed: Bed, root: Path, device: str = "killed-board") -> dict:
    import sqlite3

    db = root / device / "agent.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        committed = {row[0] for row in conn.execute("SELECT job_id FROM jobs WHERE state = 'done'")}
    rows = bed.influxd.rows("faults", f"SELECT run_id FROM edgebench_result WHERE device = '{device}'")
    return {"results_committed": len(committed), "results_landed": len(rows),
            "results_landed_distinct": len({row["run_id"] for row in rows} & committed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="production time per scenario (default 30)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures = {}
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
            figures[name] = run_scenario(name, Path(tmp), max(args.seconds, 50 if name == "away" else 0))
        f = figures[name]
        print(f"{name:9s} results {f['results_landed_distinct']}/{f['results_committed']} once "
              f"({f['results_landed']} rows), telemetry {f['telemetry_landed_distinct']}/{f['telemetry_committed']} "
              f"once ({f['telemetry_landed']} rows), resent {f['resent']}, duplicates dropped "
              f"{f['duplicates_dropped_by_collector']:.0f}, drained in {f['drain_s']} s"
              + (f", offered 2000 msg/s, achieved {f['achieved_messages_per_s']} msg/s"
                 if "achieved_messages_per_s" in f else "")
              + (f", killed board {f['board_process']}" if "board_process" in f else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = all(f["results_landed_distinct"] == f["results_committed"] == f["results_landed"]
             and f["telemetry_landed_distinct"] == f["telemetry_committed"] == f["telemetry_landed"]
             for f in figures.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
