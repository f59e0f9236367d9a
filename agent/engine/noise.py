"""Noise that can move a benchmark's numbers, sensed around the measured run: the report's ``noise`` section,
with a warning when it is high (docs/report.md, "noise").

Readers, psutil style: small functions over /proc files returning plain records, every path under a root (``/``,
or a recorded tree such as tests/fixtures/proc/) so the tests read captured files with the same code:

    read_cpu_times(root)              /proc/stat, the "cpu" line (clock ticks): busy, idle, steal
    read_loadavg(root)                /proc/loadavg
    read_stat(pid, tid, root)         /proc/PID[/task/TID]/stat: state, utime + stime, threads, processor (field 39)
    read_switches(pid, tid, root)     /proc/PID[/task/TID]/status: voluntary / nonvoluntary_ctxt_switches
    read_migrations(pid, tid, root)   /proc/PID[/task/TID]/sched: se.nr_migrations (kernels with CONFIG_SCHED_DEBUG)
    list_tasks(pid, root)             /proc/PID/task: the threads
    read_cpufreq(root)                per cpufreq policy: its CPUs, clock and governor (the cpufreq sensor's reading)

``NoiseProbe`` watches one child for the supervisor (engine/isolation.run_child). It adds no thread: each tick of
the supervisor's RSS sampler also notes the child's threads and the cores they are on (one small read per thread),
and the child announces the phase boundaries on its event pipe (``measure`` before the measured loop, ``measured``
after it). The Python worker reads its own counters right there (``snapshot``, outside every timed region) and sends
them with the event (``phase_event``), so a supervisor that reads the event late still gets the boundary's values;
for a child that sends none (the native harness announces only ``measure``; its result closes the window) the
probe reads them itself when the event arrives. ``section`` turns the two snapshots and the ticks between them into
the report's figures and warnings; ``warning_line`` is the table's one line.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, List, Optional, Sequence

# A figure at or beyond its threshold is a warning (docs/report.md, "noise", says why each is where it is).
THRESHOLDS = {
    "involuntary_per_run": 0.01,  # involuntary context switches per measured run: 1% of runs preempted moves p99
    "involuntary_min": 5,  # ...and at least this many (a short run's one or two are not a pattern)
    "steal_fraction": 0.02,  # of the machine's CPU time taken by the hypervisor for other guests
    "other_cores": 0.5,  # cores' worth of CPU used by other processes during the run
    "migrations_per_run": 0.01,  # moves of the child's threads between cores, per measured run...
    "migrations_min": 10,  # ...and at least this many
    "cpufreq_changes": 1,  # clock changes of a policy the child ran on
}
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")  # guest time is inside user
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


def _prefix(root: str) -> str:
    root = os.path.abspath(os.fspath(root))
    return "" if root == "/" else root


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("ascii", "replace")
    except OSError:
        return None


def _task_path(pid: int, tid: Optional[int], root: str, name: str) -> str:
    task = f"/task/{tid}" if tid is not None else ""
    return f"{_prefix(root)}/proc/{pid}{task}/{name}"


# ---------------------------------------------------------------- readers

def read_cpu_times(root: str = "/") -> Optional[Dict[str, int]]:
    """The machine's CPU time since boot, all CPUs together, in clock ticks (``os.sysconf("SC_CLK_TCK")``):
    the fields of /proc/stat's ``cpu`` line (proc(5)); fields an old kernel lacks are 0."""
    text = _read(f"{_prefix(root)}/proc/stat")
    for line in (text or "").splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                values = [int(v) for v in parts[1:1 + len(CPU_FIELDS)]]
            except ValueError:
                return None
            values += [0] * (len(CPU_FIELDS) - len(values))
            return dict(zip(CPU_FIELDS, values))
    return None


def read_loadavg(root: str = "/") -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages."""
    parts = (_read(f"{_prefix(root)}/proc/loadavg") or "").split()
    try:
        return [float(v) for v in parts[:3]] if len(parts) >= 3 else None
    except ValueError:
        return None


def parse_stat(text: str) -> Optional[Dict[str, Any]]:
    """/proc/PID/stat or /proc/PID/task/TID/stat (proc(5)): ``state`` (field 3), ``cpu_ticks`` (utime + stime,
    fields 14-15: the whole process in /proc/PID/stat, the one thread in task/TID/stat), ``threads`` (field 20),
    ``processor`` (field 39: the CPU it last ran on). The command name (field 2) may hold spaces and parentheses,
    so fields are counted after its last ``)``."""
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 37:
        return None
    try:
        return {"state": fields[0], "cpu_ticks": int(fields[11]) + int(fields[12]), "threads": int(fields[17]),
                "processor": int(fields[36])}
    except ValueError:
        return None


def read_stat(pid: int, tid: Optional[int] = None, root: str = "/") -> Optional[Dict[str, Any]]:
    text = _read(_task_path(pid, tid, root, "stat"))
    return parse_stat(text) if text else None


def read_switches(pid: int, tid: Optional[int] = None, root: str = "/") -> Optional[Dict[str, int]]:
    """``voluntary`` and ``involuntary`` context switches of a task (/proc/.../status: voluntary_ctxt_switches,
    nonvoluntary_ctxt_switches). /proc/PID/status counts the main thread only: sum the tasks for the process."""
    found: Dict[str, int] = {}
    for line in (_read(_task_path(pid, tid, root, "status")) or "").splitlines():
        name, _, value = line.partition(":")
        key = {"voluntary_ctxt_switches": "voluntary", "nonvoluntary_ctxt_switches": "involuntary"}.get(name)
        if key and value.strip().isdigit():
            found[key] = int(value)
    return found if len(found) == 2 else None


def read_migrations(pid: int, tid: Optional[int] = None, root: str = "/") -> Optional[int]:
    """How often the scheduler moved a task to another CPU (``se.nr_migrations`` in /proc/.../sched; only
    kernels built with CONFIG_SCHED_DEBUG have the file)."""
    for line in (_read(_task_path(pid, tid, root, "sched")) or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "se.nr_migrations":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def list_tasks(pid: int, root: str = "/") -> List[int]:
    try:
        return sorted(int(name) for name in os.listdir(f"{_prefix(root)}/proc/{pid}/task") if name.isdigit())
    except OSError:
        return []


def read_cpufreq(root: str = "/", sensor: Any = None) -> Dict[str, dict]:
    """Per cpufreq policy: ``cpus`` ("0-3"), ``cur_hz`` and ``governor``, as the cpufreq sensor reads them
    (agent/sensors/cpufreq.py; pass its ``CpufreqSensor`` to skip discovery). {} without cpufreq."""
    sensor = sensor if sensor is not None else cpufreq_sensor(root)
    if sensor is None:
        return {}
    policies: Dict[str, dict] = {}
    for reading in sensor.read():
        policy = reading.labels.get("policy")
        if not policy:
            continue
        entry = policies.setdefault(policy, {"cpus": reading.labels.get("cpus"), "cur_hz": None, "governor": None})
        if reading.role == "current":
            entry["cur_hz"] = reading.value
        elif reading.kind == "state" and reading.sensor.endswith("/governor"):
            entry["governor"] = reading.value
    return policies


def cpufreq_sensor(root: str = "/") -> Any:
    from edgebench.agent.sensors.commands import NullRunner
    from edgebench.agent.sensors.cpufreq import CpufreqSensor
    from edgebench.agent.sensors.fs import LocalFS

    found = CpufreqSensor.discover(LocalFS(root), NullRunner())
    return found[0] if found else None


def clock_ticks_per_s() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError, AttributeError):
        return 100


def cpu_ranges(cpus: Sequence[int]) -> str:
    from edgebench.agent.sensors.cpufreq import cpu_ranges as ranges

    return ranges(sorted(set(cpus)))


# ---------------------------------------------------------------- affinity (--cpus)

def available_cpus() -> Optional[List[int]]:
    """The CPUs this process may run on (its affinity: a cpuset or taskset narrows it); None where unknown."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def check_cpus(cpus: Optional[Sequence[int]], runtime: Optional[str] = None) -> None:
    """Raise UsageError unless every CPU of ``--cpus`` is one this machine lets the benchmark run on."""
    if cpus is None:
        return
    from edgebench.agent.errors import UsageError

    text = cpu_ranges(cpus) if cpus else ""
    if not cpus:
        raise UsageError("--cpus: give at least one CPU (e.g. 0, 0-3, 4,5)")
    if runtime == "native":
        raise UsageError(f"--cpus {text}: the native harness does not pin itself yet; run it under "
                         f"`taskset -c {text}` instead")
    available = available_cpus()
    if available is None:
        raise UsageError(f"--cpus {text}: this system cannot pin a process to CPUs")
    missing = sorted(set(cpus) - set(available))
    if missing:
        raise UsageError(f"--cpus {text}: CPU {cpu_ranges(missing)} is not available here (available: "
                         f"{cpu_ranges(available)})")


def pin_cpus(cpus: Optional[Sequence[int]]) -> None:
    """Pin the calling process (the worker, before it loads the model: threads it starts inherit the mask)."""
    if not cpus:
        return
    from edgebench.agent.errors import UsageError

    try:
        os.sched_setaffinity(0, set(cpus))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--cpus {cpu_ranges(cpus)}: cannot pin the benchmark process "
                         f"({getattr(exc, 'strerror', None) or exc})") from None


# ---------------------------------------------------------------- snapshots and the probe

def snapshot(pid: int, root: str = "/", clock=time.perf_counter_ns) -> dict:
    """The counters of process ``pid`` and of the machine at one moment (a phase boundary), as plain data: the
    machine's CPU times, the process's CPU time, per thread its state, core, context switches and migrations, the
    load average and the CPUs the process may run on. ``t_begin_ns``/``t_end_ns`` (perf_counter_ns: the clock of
    the latency samples) bracket the reads. The worker takes its own at its boundaries (``phase_event``)."""
    begin = clock()
    process = read_stat(pid, None, root)
    tasks = {}
    for tid in list_tasks(pid, root):
        stat = read_stat(pid, tid, root)
        if stat is None:
            continue  # the thread ended between the listing and the read
        tasks[str(tid)] = {"state": stat["state"], "processor": stat["processor"],
                           "switches": read_switches(pid, tid, root), "migrations": read_migrations(pid, tid, root)}
    cpu = read_cpu_times(root)
    try:
        affinity: Optional[List[int]] = sorted(os.sched_getaffinity(pid)) if _prefix(root) == "" else None
    except (AttributeError, OSError):
        affinity = None
    return {"t_begin_ns": begin, "pid": pid, "cpu": cpu, "child_cpu_ticks": process["cpu_ticks"] if process else None,
            "tasks": tasks, "loadavg": read_loadavg(root), "affinity": affinity, "t_end_ns": clock()}


def phase_event(phase: str) -> dict:
    """The worker's event for a phase boundary (``measure``, ``measured``), carrying its own snapshot read right
    there, outside every timed region: the supervisor may read the event late on a busy machine, the counters it
    carries are the boundary's."""
    event: Dict[str, Any] = {"type": "phase", "phase": phase}
    with contextlib.suppress(Exception):  # without it the supervisor reads the counters itself
        event["noise"] = snapshot(os.getpid())
    return event


class NoiseProbe:
    """Watches one child process for the supervisor: ``observe`` every event it sends (phase boundaries),
    ``tick`` from the RSS sampler's thread, ``record`` once it is gone."""

    def __init__(self, pid: int, root: str = "/"):
        self.pid = pid
        self.root = root
        self._task_dir = f"{_prefix(root)}/proc/{pid}/task"
        try:
            self._cpufreq = cpufreq_sensor(root)
        except Exception:  # noqa: BLE001 - no clocks is no reason to lose the run
            self._cpufreq = None
        self.start: Optional[dict] = None
        self.end: Optional[dict] = None
        self.end_by: Optional[str] = None
        self.ticks: List[tuple] = []  # (t_ns, {tid (text): (state, processor)})
        self.tick_ns: List[int] = []

    def observe(self, event: dict) -> None:
        """An event from the child: ``measure`` opens the window; the next phase, or the result, closes it."""
        kind, phase = event.get("type"), event.get("phase")
        if kind in ("progress", "phase") and phase == "measure":
            if self.start is None:
                self.start = self._boundary(event)
        elif self.start is not None and self.end is None and kind in ("result", "progress", "phase"):
            self.end = self._boundary(event)
            self.end_by = "result" if kind == "result" else "phase"

    def _boundary(self, event: dict) -> Optional[dict]:
        """The child's own snapshot when its event carries one (the Python worker's), else one read from here now
        (the native harness); plus, from here, this process's CPU time and the clocks (cpufreq)."""
        try:
            theirs = event.get("noise")
            if isinstance(theirs, dict) and isinstance(theirs.get("tasks"), dict) and theirs.get("pid") == self.pid:
                snap = dict(theirs, read_by="child")
            else:
                snap = dict(snapshot(self.pid, self.root), read_by="supervisor")
            times = os.times()
            snap["self_cpu_s"] = times.user + times.system
            snap["cpufreq"] = read_cpufreq(self.root, self._cpufreq) if self._cpufreq is not None else {}
            return snap
        except Exception:  # noqa: BLE001 - noise is reported as unknown rather than failing the run
            return None

    def tick(self, t_ns: int) -> None:
        """Which threads exist and where they are; called by the RSS sampler after each of its samples."""
        begin = time.perf_counter_ns()
        tasks = {}
        try:
            names = os.listdir(self._task_dir)
        except OSError:
            return
        for name in names:
            try:
                with open(f"{self._task_dir}/{name}/stat", "rb") as handle:
                    fields = handle.read().rpartition(b")")[2].split()
                tasks[name] = (fields[0].decode(), int(fields[36]))
            except (OSError, ValueError, IndexError):
                continue
        self.ticks.append((t_ns, tasks))
        self.tick_ns.append(time.perf_counter_ns() - begin)

    def record(self) -> dict:
        """What the probe saw, as plain data for ``section``."""
        costs = sorted(self.tick_ns)
        return {"pid": self.pid, "start": self.start, "end": self.end, "end_by": self.end_by,
                "ticks": [[t, {tid: list(v) for tid, v in tasks.items()}] for t, tasks in self.ticks],
                "clock_ticks_per_s": clock_ticks_per_s(),
                "tick_cost": {"ticks": len(costs), "mean_ns": sum(costs) // len(costs) if costs else None,
                              "max_ns": costs[-1] if costs else None}}


# ---------------------------------------------------------------- the report's section

def _delta(end: Optional[int], start: Optional[int]) -> Optional[int]:
    return end - start if end is not None and start is not None else None


def _sum_tasks(start: dict, end: dict, value) -> Optional[int]:
    """A per-thread counter summed over the threads alive at the end (threads born in the window count from 0;
    threads that ended in it are lost with their counts). None when a thread's counter could not be read."""
    total = 0
    for tid, task in end["tasks"].items():
        now = value(task)
        if now is None:
            return None
        before = start["tasks"].get(tid)
        then = value(before) if before is not None else 0
        total += max(0, now - (then or 0))
    return total


def _seen_cores(tasks: dict, leader: str) -> List[int]:
    """Cores of the threads that were running (state R) when sampled, and always the main thread's (it times the
    runs): a sleeping thread's core is only where it last was."""
    return [int(cpu) for tid, (state, cpu) in tasks.items() if state == "R" or tid == leader]


def _cpufreq_changes(start: dict, end: dict, window_ns: tuple, cores: List[int], physics: Optional[dict],
                     physics_origin_ns: Optional[int]) -> Optional[dict]:
    """Clock changes per policy over the window (monotonic ns): counted in the physics sampler's cpufreq readings
    when it sampled this machine (``source: sensors``), else only whether the clock differs between the two
    boundaries (``source: boundaries``)."""
    policies = end.get("cpufreq") or {}
    if not policies:
        return None
    from edgebench.agent.sensors.cpufreq import cpu_list

    physics = physics or {}
    sampled = bool(physics.get("samples")) and physics_origin_ns is not None and \
        os.path.abspath(str(physics.get("root", ""))) == "/"
    out = {}
    for name, now in policies.items():
        then = (start.get("cpufreq") or {}).get(name) or {}
        entry = {"cpus": now.get("cpus"), "governor": now.get("governor"), "start_hz": then.get("cur_hz"),
                 "end_hz": now.get("cur_hz")}
        if sampled:
            values, last_before = [], None
            for offset, readings in physics["samples"]:
                value = readings.get(f"cpufreq/{name}/cur")
                if value is None:
                    continue
                at = physics_origin_ns + offset
                if at < window_ns[0]:
                    last_before = value
                elif at <= window_ns[1]:
                    values.append(value)
            series = ([last_before] if last_before is not None else []) + values
            entry["changes"] = sum(1 for a, b in zip(series, series[1:]) if a != b)
            entry["min_hz"], entry["max_hz"] = (min(values), max(values)) if values else (None, None)
        else:
            entry["changes"] = int(entry["start_hz"] != entry["end_hz"]) if entry["start_hz"] is not None else None
        if then.get("governor") and then.get("governor") != now.get("governor"):
            entry["governor_start"] = then.get("governor")
        entry["child_ran_here"] = bool(set(cpu_list(now.get("cpus") or "")) & set(cores)) if cores else None
        out[name] = entry
    relevant = [e for e in out.values() if e["child_ran_here"] is not False]
    counts = [e["changes"] for e in relevant if e["changes"] is not None]
    return {"source": "sensors" if sampled else "boundaries", "changes": sum(counts) if counts else None,
            "governors": sorted({e["governor"] for e in relevant if e["governor"]}), "policies": out}


def _pct(fraction: float) -> str:
    """12%, 8%, 2.5%: whole percents from 10% up, one decimal below (when it is not 0)."""
    if fraction >= 0.1:
        return f"{fraction:.0%}"
    return f"{fraction * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _empty(requested: Optional[List[int]], runtime_threads: Optional[int], probe: Optional[dict]) -> Dict[str, Any]:
    return {"window": None, "cpu": None, "context_switches": None, "migrations": None, "cores": [],
            "core_samples": {}, "samples": 0, "affinity": {"requested": requested, "effective": None},
            "cpufreq": None, "loadavg": None,
            "threads": {"start": None, "end": None, "min": None, "max": None, "runtime": runtime_threads},
            "probe": probe, "thresholds": dict(THRESHOLDS), "warnings": []}


def section(raw: Optional[dict], run: dict, requested_cpus: Optional[Sequence[int]] = None,
            runtime_threads: Optional[int] = None, physics: Optional[dict] = None,
            physics_origin_ns: Optional[int] = None) -> dict:
    """One measured phase's ``noise`` from its probe's ``record()``. ``run``: the worker result or the report's
    repeat entry it belongs to (``timing.measured.origin_monotonic_ns``, ``samples``); ``physics``: the report's
    physics section, whose samples (offsets from ``physics_origin_ns``) count cpufreq changes."""
    origin = run["timing"]["measured"]["origin_monotonic_ns"]
    requested = sorted(set(requested_cpus)) if requested_cpus else None
    start, end = (raw or {}).get("start"), (raw or {}).get("end")
    out = _empty(requested, runtime_threads, (raw or {}).get("tick_cost"))
    if not start or not end:
        out["note"] = ("not sensed: the benchmark process did not report its measured phase" if raw else
                       "not sensed for this run")
        return out
    hz = raw.get("clock_ticks_per_s") or 100
    # Runs that started after the first snapshot was read and ended before the second began: every event of
    # theirs falls between the two reads of the counters.
    low, high = start["t_end_ns"] - origin, end["t_begin_ns"] - origin
    runs = sum(1 for offset, latency in zip(run["samples"]["start_offset_ns"], run["samples"]["latency_ns"])
               if offset >= low and offset + latency <= high)
    seconds = ((end["t_begin_ns"] + end["t_end_ns"]) - (start["t_begin_ns"] + start["t_end_ns"])) / 2e9
    out["window"] = {"start_offset_ns": start["t_begin_ns"] - origin, "end_offset_ns": end["t_end_ns"] - origin,
                     "duration_s": seconds, "runs": runs, "closed_by": raw.get("end_by")}
    leader = str(raw.get("pid"))

    cpu_a, cpu_b = start.get("cpu"), end.get("cpu")
    if cpu_a and cpu_b and seconds > 0:
        total = sum(cpu_b[k] - cpu_a[k] for k in CPU_FIELDS)
        steal = cpu_b["steal"] - cpu_a["steal"]
        busy_s = sum(cpu_b[k] - cpu_a[k] for k in BUSY_FIELDS) / hz
        child_ticks = _delta(end.get("child_cpu_ticks"), start.get("child_cpu_ticks"))
        child_s = child_ticks / hz if child_ticks is not None else None
        self_s = max(0.0, end["self_cpu_s"] - start["self_cpu_s"])
        # Other processes: the machine's busy time less the child's and this process's (the supervisor, the
        # sensor sampler). Clock-tick accounting is coarse (1/clock_ticks_per_s): never below 0.
        other_s = max(0.0, busy_s - child_s - self_s) if child_s is not None else None
        out["cpu"] = {"clock_ticks_per_s": hz, "total_ticks": total, "steal_ticks": steal,
                      "steal_fraction": steal / total if total > 0 else None,
                      "machine_busy_s": busy_s, "child_cpu_s": child_s, "this_process_cpu_s": self_s,
                      "other_cpu_s": other_s, "machine_busy_cores": busy_s / seconds,
                      "child_cores": child_s / seconds if child_s is not None else None,
                      "this_process_cores": self_s / seconds,
                      "other_cores": other_s / seconds if other_s is not None else None}

    voluntary = _sum_tasks(start, end, lambda t: (t.get("switches") or {}).get("voluntary"))
    involuntary = _sum_tasks(start, end, lambda t: (t.get("switches") or {}).get("involuntary"))
    main_a, main_b = start["tasks"].get(leader), end["tasks"].get(leader)
    main_inv = _delta(((main_b or {}).get("switches") or {}).get("involuntary"),
                      ((main_a or {}).get("switches") or {}).get("involuntary"))
    if voluntary is not None or involuntary is not None:
        out["context_switches"] = {
            "voluntary": voluntary, "involuntary": involuntary, "main_thread_involuntary": main_inv,
            "involuntary_per_run": involuntary / runs if involuntary is not None and runs else None}

    # Cores and threads: the ticks inside the window and the two snapshots at its ends.
    samples = [{tid: (t["state"], t["processor"]) for tid, t in start["tasks"].items()}]
    samples += [tasks for t, tasks in raw.get("ticks") or [] if start["t_end_ns"] <= t <= end["t_begin_ns"]]
    samples.append({tid: (t["state"], t["processor"]) for tid, t in end["tasks"].items()})
    counts: Dict[int, int] = {}
    for tasks in samples:
        for cpu in set(_seen_cores(tasks, leader)):
            counts[cpu] = counts.get(cpu, 0) + 1
    out["cores"] = sorted(counts)
    out["core_samples"] = {str(cpu): counts[cpu] for cpu in sorted(counts)}
    sizes = [len(tasks) for tasks in samples if tasks]
    out["threads"].update({"start": len(start["tasks"]) or None, "end": len(end["tasks"]) or None,
                           "min": min(sizes) if sizes else None, "max": max(sizes) if sizes else None})
    out["samples"] = len(samples)

    migrations = _sum_tasks(start, end, lambda t: t.get("migrations"))
    if migrations is not None:
        out["migrations"] = {"count": migrations, "source": "sched",
                             "per_run": migrations / runs if runs else None}
    elif len(samples) > 1:  # no sched file: moves seen between samples, a lower bound
        moves, last = 0, {}
        for tasks in samples:
            for tid, (_, cpu) in tasks.items():
                moves += int(tid in last and last[tid] != cpu)
                last[tid] = cpu
        out["migrations"] = {"count": moves, "source": "samples", "per_run": moves / runs if runs else None}

    out["affinity"]["effective"] = start.get("affinity")
    out["loadavg"] = {"start": start.get("loadavg"), "end": end.get("loadavg")}
    out["cpufreq"] = _cpufreq_changes(start, end, (start["t_begin_ns"], end["t_end_ns"]), out["cores"], physics,
                                      physics_origin_ns)
    out["warnings"] = warnings(out)
    return out


def _total(values: list) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def combine(sections: List[dict]) -> dict:
    """The run's ``noise`` from its repeats' (each a measured phase of its own child): counts and seconds added,
    rates over the total window, cores and governors joined, the load average from the first start to the last
    end; warnings judged again on the whole."""
    sensed = [s for s in sections if s.get("window")]
    if len(sensed) < 2:
        return dict(sensed[0] if sensed else sections[0])
    first, last = sensed[0], sensed[-1]
    out = _empty(first["affinity"]["requested"], first["threads"]["runtime"], None)
    seconds = sum(s["window"]["duration_s"] for s in sensed)
    runs = sum(s["window"]["runs"] for s in sensed)
    out["window"] = {"duration_s": seconds, "runs": runs, "repeats": len(sensed),
                     "closed_by": sorted({s["window"]["closed_by"] for s in sensed if s["window"]["closed_by"]})}
    cpus = [s["cpu"] for s in sensed if s.get("cpu")]
    if len(cpus) == len(sensed) and seconds > 0:
        cpu = {key: _total([c[key] for c in cpus]) for key in ("total_ticks", "steal_ticks", "machine_busy_s",
                                                               "child_cpu_s", "this_process_cpu_s", "other_cpu_s")}
        cpu["clock_ticks_per_s"] = cpus[0]["clock_ticks_per_s"]
        cpu["steal_fraction"] = cpu["steal_ticks"] / cpu["total_ticks"] if cpu["total_ticks"] else None
        for key in ("machine_busy", "child", "this_process", "other"):
            value = cpu[f"{key}_s" if key == "machine_busy" else f"{key}_cpu_s"]
            cpu[f"{key}_cores"] = value / seconds if value is not None else None
        out["cpu"] = cpu
    switches = [s["context_switches"] for s in sensed if s.get("context_switches")]
    if switches:
        involuntary = _total([c["involuntary"] for c in switches])
        out["context_switches"] = {"voluntary": _total([c["voluntary"] for c in switches]),
                                   "involuntary": involuntary,
                                   "main_thread_involuntary": _total([c["main_thread_involuntary"] for c in switches]),
                                   "involuntary_per_run": involuntary / runs if involuntary is not None and runs
                                   else None}
    moves = [s["migrations"] for s in sensed if s.get("migrations")]
    if moves:
        count = sum(m["count"] for m in moves)
        out["migrations"] = {"count": count, "per_run": count / runs if runs else None,
                             "source": "sched" if all(m["source"] == "sched" for m in moves) else "samples"}
    counts: Dict[str, int] = {}
    for s in sensed:
        for cpu_id, n in s["core_samples"].items():
            counts[cpu_id] = counts.get(cpu_id, 0) + n
    out["core_samples"] = {k: counts[k] for k in sorted(counts, key=int)}
    out["cores"] = sorted(int(k) for k in counts)
    out["samples"] = sum(s["samples"] for s in sensed)
    out["affinity"]["effective"] = first["affinity"]["effective"]
    out["loadavg"] = {"start": (first.get("loadavg") or {}).get("start"), "end": (last.get("loadavg") or {}).get("end")}
    threads = [s["threads"] for s in sensed]
    out["threads"].update({"start": first["threads"]["start"], "end": last["threads"]["end"],
                           "min": min((t["min"] for t in threads if t["min"] is not None), default=None),
                           "max": max((t["max"] for t in threads if t["max"] is not None), default=None)})
    clocks = [s["cpufreq"] for s in sensed if s.get("cpufreq")]
    if clocks:
        out["cpufreq"] = {"source": "sensors" if all(c["source"] == "sensors" for c in clocks) else "boundaries",
                          "changes": _total([c["changes"] for c in clocks]),
                          "governors": sorted({g for c in clocks for g in c["governors"]})}
    probes = [s["probe"] for s in sensed if s.get("probe") and s["probe"].get("ticks")]
    if probes:
        ticks = sum(p["ticks"] for p in probes)
        out["probe"] = {"ticks": ticks, "mean_ns": sum(p["mean_ns"] * p["ticks"] for p in probes) // ticks,
                        "max_ns": max(p["max_ns"] for p in probes)}
    out["warnings"] = warnings(out)
    return out


def add_to_report(report: dict, raws: List[Optional[dict]], requested_cpus: Optional[Sequence[int]] = None) -> None:
    """``report["noise"]`` from each child's probe record (one per repeat, in order); with several repeats each
    repeat's own goes in ``repeats[i].noise`` too. Call it once the physics section is in (cpufreq changes)."""
    repeats = report.get("repeats") or []
    runs = repeats if len(repeats) == len(raws) else [report]
    threads = (report.get("runtime") or {}).get("threads")
    physics, origin = report.get("physics"), report["timing"]["measured"]["origin_monotonic_ns"]
    sections = [section(raw, run, requested_cpus, threads, physics, origin) for raw, run in zip(raws, runs)]
    if len(sections) > 1:
        for entry, found in zip(repeats, sections):
            entry["noise"] = found
    report["noise"] = combine(sections) if sections else section(None, report, requested_cpus, threads)


def warnings(noise: dict) -> List[str]:
    """The figures at or past their THRESHOLDS, one phrase each."""
    found = []
    window = noise.get("window") or {}
    runs = window.get("runs") or 0
    switches = noise.get("context_switches") or {}
    involuntary = switches.get("involuntary")
    if involuntary and runs and involuntary >= THRESHOLDS["involuntary_min"] and \
            involuntary / runs >= THRESHOLDS["involuntary_per_run"]:
        found.append(f"involuntary context switches: {involuntary:,} ({_pct(min(1.0, involuntary / runs))} of runs "
                     f"preempted)")
    cpu = noise.get("cpu") or {}
    steal = cpu.get("steal_fraction")
    if steal is not None and steal >= THRESHOLDS["steal_fraction"]:
        found.append(f"steal time {_pct(steal)} of the run")
    other = cpu.get("other_cores")
    if other is not None and other >= THRESHOLDS["other_cores"]:
        found.append(f"other processes used {other:.1f} cores during the run")
    migrations = (noise.get("migrations") or {}).get("count")
    if migrations and runs and migrations >= THRESHOLDS["migrations_min"] and \
            migrations / runs >= THRESHOLDS["migrations_per_run"]:
        at_least = "at least " if noise["migrations"]["source"] == "samples" else ""
        found.append(f"the child migrated between cores {at_least}{migrations:,} times")
    cpufreq = noise.get("cpufreq") or {}
    changes = cpufreq.get("changes")
    if changes is not None and changes >= THRESHOLDS["cpufreq_changes"]:
        governors = ", ".join(cpufreq.get("governors") or []) or "unknown"
        times = f"{changes:,} times" if cpufreq.get("source") == "sensors" else "between the start and the end"
        found.append(f"cpufreq changed {times} (governor {governors})")
    threads = (noise.get("threads") or {}).get("runtime")
    allowed = (noise.get("affinity") or {}).get("effective")
    if threads and allowed and threads > len(allowed):
        found.append(f"the runtime runs {threads} threads on {len(allowed)} allowed "
                     f"core{'s' if len(allowed) > 1 else ''}")
    return found


def warning_line(noise: Optional[dict]) -> Optional[str]:
    """The bench table's one line when the run was noisy (None when it was not)."""
    found = (noise or {}).get("warnings") or []
    return f"NOISY     {'; '.join(found)} (the report's noise section has the figures)" if found else None
