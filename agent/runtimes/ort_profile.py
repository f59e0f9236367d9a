"""ONNX Runtime's profile file (``SessionOptions.enable_profiling``, a Chrome-trace JSON list of events), read once
for the Python plugin and the native harness alike: which provider ran each node, and each node's time per run.

Node events are ``{"cat": "Node", "name": "NODE_kernel_time", "dur": MICROSECONDS, "args": {"op_name", "provider",
...}}``; each inference is a ``{"cat": "Session", "name": "model_run"}`` event whose span holds its nodes' events.
"""

from __future__ import annotations

import json

from edgebench.agent.runtimes.base import Node, Placement

SOURCE = "onnxruntime-profiler"
_SUFFIX = "_kernel_time"


def read_runs(path: str) -> list[list[dict]]:
    """The node events of each ``model_run`` in the profile file at ``path``, in time order."""
    with open(path) as handle:
        events = json.load(handle)
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")
    runs: list[list[dict]] = [[] for _ in windows]
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(_SUFFIX)),
                   key=lambda e: e["ts"])
    for event in nodes:
        for index, (start, end) in enumerate(windows):
            if start <= event["ts"] <= end:
                runs[index].append(event)
                break
    return runs


def node_name(event: dict) -> str:
    return event["name"][: -len(_SUFFIX)]


def placement(run: list[dict], first_choice: str) -> Placement:
    """Each node's provider in one profiled run; a partition is a run of consecutive nodes on one provider."""
    nodes, partition, previous = [], -1, None
    for event in run:
        provider = event["args"].get("provider", "?")
        if provider != previous:
            partition, previous = partition + 1, provider
        nodes.append(Node(node_name(event), event["args"].get("op_name", "?"), provider, partition))
    return Placement(source=SOURCE, first_choice=first_choice, nodes=nodes)


def node_durations(runs: list[list[dict]]) -> list[dict]:
    """The worker result's ``ops.nodes``: each node's time in each run (a node called twice in a run: the sum)."""
    nodes: dict[str, dict] = {}
    for index, events in enumerate(runs):
        for event in events:
            name = node_name(event)
            node = nodes.setdefault(name, {"name": name, "op": event["args"].get("op_name", "?"),
                                           "backend": event["args"].get("provider", "?"),
                                           "duration_ns": [0] * len(runs)})
            node["duration_ns"][index] += int(event["dur"]) * 1000
    return list(nodes.values())
