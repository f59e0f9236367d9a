"""The agent daemon's idle footprint: RSS and CPU while connected and idle (goal: < 60 MB, < 1 % of one core).

    .venv/bin/python bench/agent_idle.py [--seconds 30]

Starts its own Mosquitto on a free loopback port and an agent with the default heartbeat and telemetry periods,
waits until it is connected, then reads /proc/PID for the given time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # localfleet

from localfleet import Mosquitto, Service, edgebench_argv, wait_for  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgebench-idle-"))
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    agent = Service(edgebench_argv("-v", "agent", "--mqtt", broker.url, "--device-id", "idle-board",
                                   "--data-dir", str(work / "agent")), work / "agent.log")
    agent.start()
    try:
        wait_for(lambda: "connected to" in agent.log_text(), 30, "the agent to connect")
        time.sleep(2.0)  # let start-up work (inventory, first telemetry sample) finish before measuring
        pid = agent.proc.pid
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        peak = 0
        while time.monotonic() - wall0 < args.seconds:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.5)
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
    finally:
        agent.stop()
        broker.stop()
    print(f"agent idle: RSS {peak / 2**20:.1f} MiB (goal < 60), CPU {cpu * 100:.2f} % of one core (goal < 1) "
          f"over {args.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
