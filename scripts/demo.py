#!/usr/bin/env python3
"""`make demo`: a local fleet on this machine, the demo models benchmarked through it, and the variants table.

1. Brings up Mosquitto, InfluxDB, the collector and one local agent on free loopback ports, under out/fleet/
   (scripts/localfleet.py; `scripts/ensure_services.sh` installs the binaries if they are missing).
2. Pushes the real demo models with `edgebench push --wait`: each runs on the agent through the same engine as
   `edgebench bench`, its result lands in InfluxDB, and the fleet comparison is printed.
3. `edgebench variants` shows the float32 / float16 / int8 trade-off on a real ONNX classifier.
The fleet keeps running afterwards so you can query it; `make demo-stop` (this script with --stop) stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402
from localfleet import Agent, Collector, Influxd, Mosquitto, wait_for  # noqa: E402

from edgebench.agent.cli import main as edgebench  # noqa: E402

OUT = ROOT / "out"
FLEET = OUT / "fleet"
STATE = FLEET / "fleet.json"
DEVICE = "local-1"
# (models, push options): one push per group, because --shape applies to every model of a push
PUSHES = [
    (["efficientnet_lite0_int8.tflite", "deeplabv3.tflite"], []),
    (["ppocr_rec.onnx"], ["--shape", "x=1x3x48x320"]),
    (["silero_vad.onnx"], ["--shape", "input=1x512", "--shape", "state=2x1x128", "--input", "sr=16000"]),
    # PyTorch: the same VAD as TorchScript, and MiniLM-L6 as ExecuTorch programs, float32 and dynamic int8
    (["silero_vad.jit"], ["--shape", "x=1x512", "--input", "sr=16000"]),
    (["minilm_l6_fp32.pte", "minilm_l6_dynamic-int8.pte"], []),
    # a tiny LLM on llama.cpp: TTFT, prefill and decode tokens/s (the dashboard's language-model panel)
    (["smollm2_135m_q4_1.gguf"], ["--prompt-tokens", "128", "--gen-tokens", "64"]),
]


def stop_fleet() -> int:
    """Stop a fleet a previous demo left running, by the PIDs it recorded."""
    if not STATE.exists():
        print("no demo fleet is running")
        return 0
    for name, pid in json.loads(STATE.read_text())["pids"].items():
        try:
            os.kill(pid, signal.SIGTERM)
            print(f"stopped {name} (pid {pid})")
        except ProcessLookupError:
            pass
    STATE.unlink()
    return 0


def start_fleet() -> dict:
    broker = Mosquitto(FLEET / "mosquitto")
    influxd = Influxd(FLEET / "influxdb")
    broker.start()
    influxd.start()
    collector = Collector(FLEET / "collector", broker.url, influxd.url, "edgebench")
    collector.start()
    agent = Agent(FLEET / "agent", broker.url, DEVICE, f"class=demo-{os.uname().machine}", ("--heartbeat", "5"))
    agent.start()

    def online() -> bool:
        devices = collector.get("/api/v1/devices")["devices"]
        return any(d["device_id"] == DEVICE and d["state"] == "online" and d["inventory"] for d in devices)

    wait_for(online, 60, f"agent {DEVICE} to come online")
    state = {"collector": collector.url, "influxdb": influxd.url, "mqtt": broker.url, "database": "edgebench",
             "token_file": str(FLEET / "collector" / "data" / "admin-token"),  # the collector's first admin token
             "pids": {"mosquitto": broker.proc.pid, "influxd": influxd.proc.pid, "collector": collector.proc.pid,
                      "agent": agent.proc.pid}}
    STATE.write_text(json.dumps(state, indent=1))
    return state


def count_results(state: dict) -> int:
    query = urllib.parse.urlencode({"db": state["database"], "q": "SELECT count(p50_ms) FROM edgebench_result"})
    with urllib.request.urlopen(f"{state['influxdb']}/query?{query}", timeout=10) as response:
        series = json.loads(response.read())["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="stop the fleet a previous demo left running")
    args = parser.parse_args()
    if args.stop:
        return stop_fleet()
    stop_fleet()
    FLEET.mkdir(parents=True, exist_ok=True)
    paths = fetch_models.fetch([m for models, _ in PUSHES for m in models] + ["ppocr_cls.onnx"])
    state = start_fleet()
    print(f"local fleet up: collector {state['collector']}, MQTT {state['mqtt']}, InfluxDB {state['influxdb']}")
    for models, options in PUSHES:
        code = edgebench(["push", *(str(paths[m]) for m in models), *options, "--server", state["collector"],
                          "--token", Path(state["token_file"]).read_text().strip(), "--devices", "all", "--wait",
                          "--wait-timeout", "600", "--json", str(FLEET / f"push-{Path(models[0]).stem}.json")])
        if code != 0:
            print(f"push of {', '.join(models)} failed (exit {code}); logs in {FLEET}", file=sys.stderr)
            return code
    print(f"\n{count_results(state)} results in InfluxDB (database {state['database']}, measurement "
          f"edgebench_result)\n")
    code = edgebench(["variants", str(paths["ppocr_cls.onnx"]), "--shape", "x=1x3x48x192",
                     "--out-dir", str(OUT / "variants"), "--json", str(OUT / "ppocr_cls.variants.json")])
    print(f"\nThe fleet is still running (PIDs in {STATE}): try `EDGEBENCH_TOKEN=$(cat {state['token_file']}) "
          f"edgebench devices --server {state['collector']}`."
          f"\nThe fleet's page: open {state['collector']}/ and paste the token from {state['token_file']}."
          f"\nStop it with: make demo-stop")
    return code


if __name__ == "__main__":
    sys.exit(main())
