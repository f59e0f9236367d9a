"""Fixtures of the dashboard tests: the committed dashboards, Grafana's JSON Schema, and one real fleet run whose
InfluxDB every panel query is run against.

The fleet (once per module that asks for it): Mosquitto, influxd, the collector and two agents, started with the
project's launchers (scripts/localfleet.py); ``edgebench push`` benchmarks two real models on both boards
and waits for the results. This machine has no thermal zones, clocks or power sensors, so one agent runs in a
private mount namespace where a copy of a recorded Jetson Orin Nano tree (tests/fixtures/boards/jetson-orin-nano)
is mounted over /sys/class and /sys/devices/system/cpu/cpufreq: the real agent, engine and sensor plugins then
report its temperature and its INA3221 board power (energy per inference). A second, longer job on that board
heats it: once the job is measuring, the test writes a CPU temperature past the zone's passive trip into the tree,
and the engine's throttle detection marks the run as throttled, as on a board that overheats mid-run. The other
agent reads this machine as it is. On that board, a dynamic-int8 variant of PP-OCR's direction classifier (made
here with edgebench.agent.optimize.variants) is pushed with ``--reference`` the float32 original: its result carries
the drift. Every push asks for the per-op profile (``--profile-ops``): ONNX Runtime's profiler gives the variant's
time by op type; LiteRT's results say it has none; every result says where its nodes ran (EfficientNet-Lite0 int8
leaves 4 of its 64 nodes to LiteRT's CPU kernels under XNNPACK). Where llama.cpp is installed, the host board also
runs a real GGUF language model (SmolLM2-135M Q4_1: a short generation, two repeats): its tokens/s fill the model
comparison's language-model table.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from localfleet import Agent, Collector, Influxd, Mosquitto, Service, binary, wait_for

from edgebench.dashboards.build import DASHBOARDS, JSON_DIR
from edgebench.server.lineprotocol import line

from ..conftest import REPO

DB = "edgebench"
JETSON, HOST = "jetson-orin-01", "x86-host-01"
BOARDS = REPO / "tests" / "fixtures" / "boards"
PUSH_ARGS = ("--min-runs", "150", "--min-duration", "0.1", "--warmup-runs", "5", "--warmup-duration", "0.05",
             "--repeats", "3", "--profile-ops")  # LiteRT from Python has no per-op profiler: its results say why
VARIANT, VARIANT_REFERENCE = "ppocr_cls.dynamic-int8.onnx", "ppocr_cls.onnx"
LLM = "smollm2_135m_q4_1.gguf"  # run where llama.cpp is installed (FleetRun.llm)
LLM_ARGS = ("--prompt-tokens", "32", "--gen-tokens", "8", "--repeats", "2", "--threads", "2")
VARIANT_ARGS = ("--shape", "x=1x3x48x192", "--min-runs", "50", "--min-duration", "0.1", "--warmup-runs", "2",
                "--warmup-duration", "0.05", "--repeats", "3", "--profile-ops", "--profile-runs", "10")


@pytest.fixture(scope="session")
def committed() -> dict[str, dict]:
    """The committed dashboard JSON, by file stem."""
    return {name: json.loads((JSON_DIR / f"{name}.json").read_text()) for name in DASHBOARDS}


@pytest.fixture(scope="session")
def grafana_schema() -> dict:
    from .grafana_schema import SchemaUnavailable, load_schema

    try:
        return load_schema()
    except SchemaUnavailable as exc:  # a failure, not a skip: without it the dashboards are unchecked
        pytest.fail(f"cannot build Grafana's dashboard JSON Schema: {exc}")


# ---------------------------------------------------------------- the fleet


def namespace_works() -> bool:
    """Can this process mount a recorded board in a private mount namespace (root with CAP_SYS_ADMIN)?"""
    unshare = shutil.which("unshare")
    if not unshare:
        return False
    probe = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                            "mount --bind /sys/class /sys/class"], capture_output=True)
    return probe.returncode == 0


def jetson_tree(root: Path) -> Path:
    """A writable copy of the recorded Orin Nano tree."""
    tree = root / "jetson-orin-nano"
    shutil.copytree(BOARDS / "jetson-orin-nano", tree)
    return tree


def overheat(tree: Path) -> None:
    """cpu-thermal 0.5 C over its passive trip (99 C on the Orin Nano): where the kernel starts cutting clocks."""
    zone = tree / "sys" / "class" / "thermal" / "thermal_zone0"
    assert (zone / "trip_point_0_type").read_text().strip() == "passive"
    (zone / "temp").write_text(f"{int((zone / 'trip_point_0_temp').read_text()) + 500}\n")


def in_recorded_board(agent: Agent, tree: Path) -> None:
    """Start the agent (and so its jobs) in a mount namespace that sees ``tree``'s sysfs."""
    script = ('mount --bind "$1/sys/class" /sys/class && '
              'mount --bind "$1/sys/devices/system/cpu/cpufreq" /sys/devices/system/cpu/cpufreq && '
              'shift && exec "$@"')
    agent.argv = [shutil.which("unshare") or "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                  "sh", str(tree), *agent.argv]


@dataclass
class FleetRun:
    influxd: Influxd
    db: str
    devices: dict[str, str]  # device id -> board class
    sensors: bool  # the Jetson agent saw its recorded sensors
    push: dict = field(default_factory=dict)  # push --json output
    llm: bool = False  # the host board ran the GGUF language model (llama.cpp is installed)

    def query(self, text: str) -> list[dict]:
        return self.influxd.query(self.db, text)


def write_gate_verdicts(influxd: Influxd, db: str, models: list[str], classes: list[str]) -> None:
    """Release-gate verdicts as ``edgebench gate`` records them (measurement edgebench_gate; docs/gates.md): two
    evaluations a minute apart, one rule passing throughout, one that starts failing in the second."""
    import urllib.request

    now = time.time_ns()
    lines = []
    for evaluation, ts in enumerate((now - 60 * 10**9, now)):
        index = 0
        for model in models:
            for board_class in classes:
                for rule, passed in (("p90-budget", True), ("p90-regression", evaluation == 0)):
                    status = "pass" if passed else "fail"
                    value = 1.5 if rule == "p90-budget" else (2.0 if passed else 12.5)
                    message = "within budget" if passed else "p90 regressed 12.5% vs v1.4.0 (limit 5%)"
                    lines.append(line("edgebench_gate", {"rule": rule, "model": model, "board_class": board_class,
                                                         "config": "litert xnnpack", "status": status},
                                      {"passed": passed, "value": value, "message": message}, ts + index))
                    index += 1
    request = urllib.request.Request(f"{influxd.url}/write?db={db}&precision=ns", data="\n".join(lines).encode())
    with urllib.request.urlopen(request, timeout=10):
        pass


def push(collector: Collector, out: Path, model_files: list[Path], devices: str, settings: tuple,
         wait: bool = True, reference: Optional[Path] = None) -> dict:
    """``edgebench push`` (the engineers' command) against the collector; its --json answer."""
    argv = [sys.executable, "-m", "edgebench.agent.cli", "push", *map(str, model_files), "--server", collector.url,
                                                                      "--token", collector.token,
            "--devices", devices, *settings, "--json", str(out)]
    if reference is not None:
        argv += ["--reference", str(reference)]
    if wait:
        argv += ["--wait", "--wait-timeout", "150"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=200, cwd=REPO)
    assert proc.returncode == 0, f"push failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    answer = json.loads(out.read_text())
    if wait:
        assert {j["state"] for j in answer["jobs"]} == {"done"}, answer["jobs"]
    return answer


def heat_mid_run(collector: Collector, out: Path, model: Path, tree: Path) -> None:
    """A 5 s job on the Jetson; once it reports its measured phase, the board overheats."""
    batch = push(collector, out, [model], JETSON, ("--min-runs", "400", "--min-duration", "5", "--warmup-runs",
                                                   "5", "--warmup-duration", "0.05"), wait=False)["batch_id"]

    def jobs() -> list[dict]:
        return collector.get(f"/api/v1/jobs?batch={batch}")["jobs"]

    wait_for(lambda: any((j.get("progress") or {}).get("phase") == "measure" for j in jobs()), 60,
             "the long job to start measuring", interval=0.05)
    overheat(tree)
    wait_for(lambda: all(j["state"] == "done" for j in jobs()), 60, "the long job to finish")


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory, models) -> FleetRun:
    if not binary("mosquitto") or not binary("influxd"):
        subprocess.run(["sh", str(REPO / "scripts" / "ensure_services.sh")], check=False)
    if not binary("mosquitto") or not binary("influxd"):
        pytest.fail("mosquitto and influxd are required: run scripts/ensure_services.sh")
    root = tmp_path_factory.mktemp("dashboards-fleet")
    Service.cwd = REPO
    services: list[Service] = []
    try:
        influxd = Influxd(root / "influxd")
        influxd.start()
        services.append(influxd)
        broker = Mosquitto(root / "mosquitto")
        broker.start()
        services.append(broker)
        collector = Collector(root / "collector", broker.url, influxd.url, DB)
        collector.start()
        services.append(collector)

        sensors = namespace_works()
        tree = jetson_tree(root)
        devices = {JETSON: "orin-nano", HOST: "x86"}
        agents = {}
        for device, board_class in devices.items():
            agent = Agent(root / device, broker.url, device, f"class={board_class},site=ci")
            if device == JETSON and sensors:
                in_recorded_board(agent, tree)
            agent.start()
            services.append(agent)
            agents[device] = agent

        def online() -> bool:
            listed = collector.get("/api/v1/devices")["devices"]
            return {d["device_id"] for d in listed if d["state"] == "online" and d["inventory"]} >= set(devices)

        wait_for(online, 60, "both agents online in the registry")
        answer = push(collector, root / "push.json", [models["sine_float.tflite"],
                                                      models["efficientnet_lite0_int8.tflite"]], "all", PUSH_ARGS)
        if sensors:
            heat_mid_run(collector, root / "push-hot.json", models["efficientnet_lite0_int8.tflite"], tree)
        from edgebench.agent.optimize.makers.onnx_variants import make_dynamic_int8

        variant = root / VARIANT
        make_dynamic_int8(models[VARIANT_REFERENCE], variant)
        drifted = push(collector, root / "push-variant.json", [variant], HOST, VARIANT_ARGS,
                       reference=models[VARIANT_REFERENCE])
        assert "error" not in (drifted["rows"][0]["drift"] or {"error": "no drift"}), drifted["rows"]
        llm = importlib.util.find_spec("llama_cpp") is not None
        if llm:
            push(collector, root / "push-llm.json", [models[LLM]], HOST, LLM_ARGS)

        def points(text: str) -> list:
            return influxd.query(DB, text)

        runs = (6 if sensors else 5) + llm
        wait_for(lambda: sum(len(s["values"]) for s in points('SELECT "p50_ms" FROM "edgebench_result"')) >= runs,
                 60, f"{runs} result points in InfluxDB")
        wait_for(lambda: len(points('SELECT last("load1") FROM "edgebench_telemetry" GROUP BY "device"')) == 2, 60,
                 "telemetry from both agents")
        if sensors:
            throttled = points(f'SELECT "p90_ms" FROM "edgebench_result" WHERE "throttled" = true AND "device" = '
                               f"'{JETSON}'")
            assert throttled, "the run that overheated mid-run is not marked throttled"
        # A board going away: the host agent stops cleanly (its status goes offline).
        agents[HOST].stop()
        model_names = sorted(value for s in points('SHOW TAG VALUES FROM "edgebench_result" WITH KEY = "model"')
                             for _, value in s["values"])
        write_gate_verdicts(influxd, DB, model_names, sorted(set(devices.values())))
        yield FleetRun(influxd, DB, devices, sensors, answer, llm)
    finally:
        for service in reversed(services):
            service.stop()
