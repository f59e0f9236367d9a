"""The isolated benchmark process: ``python -m edgebench.agent.engine.worker REQUEST.json EVENTS_FD``, or a process
forked by the engine's zygote (engine/zygote.py: ``serve``, after ``preload``), one per repeat of a run.

It loads the runtime, runs the measurement protocol (or plain inferences, for compare) and writes JSON-line
events to the events pipe: phase/progress updates, then one ``result`` or ``error``. Anything the runtime
prints goes to this process's stdout/stderr, which the parent captures, so it can never corrupt the events.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from edgebench.agent.errors import EdgebenchError


class Events:
    def __init__(self, fd: int):
        self._stream = os.fdopen(fd, "w", buffering=1)

    def send(self, event: dict) -> None:
        self._stream.write(json.dumps(event, default=str) + "\n")
        self._stream.flush()

    def progress(self, phase: str, runs: int, elapsed_s: float) -> None:
        self.send({"type": "progress", "phase": phase, "runs": runs, "elapsed_s": round(elapsed_s, 3)})


def _loader(request: dict):
    from edgebench.agent.runtimes import runtime_class
    from edgebench.agent.runtimes.base import RuntimeOptions

    runtime = runtime_class(request["runtime"])()
    options = RuntimeOptions(**request.get("options", {}))
    return lambda: runtime.load(request["model"], options)


def _feeds_factory(request: dict, sources: dict):
    """Inputs are parsed here, in the child, so bad --shape/--input values fail with the model's names. ``sources``
    (parsed --input) learn how an image file was read, for the report's description of the feeds."""
    from edgebench.agent.engine.images import ImageOptions
    from edgebench.agent.engine.inputs import build_feeds, parse_shapes

    shapes = parse_shapes(request.get("shape_args", []))
    images = ImageOptions(request.get("image_mean"), request.get("image_std"), request["model"])
    return lambda session: build_feeds(session.inputs, shapes, sources, request.get("seed", 0), images)


def _describe(session: Any) -> dict:
    return {"inputs": [t.to_dict() for t in session.inputs], "outputs": [t.to_dict() for t in session.outputs],
            "backend": session.backend.to_dict()}


def run_bench(request: dict, events: Events) -> dict:
    from edgebench.agent.engine.inputs import describe_feeds, parse_sources
    from edgebench.agent.engine.measure import RunSettings, benchmark
    from edgebench.agent.engine.noise import phase_event

    if request.get("generation"):  # a language model: prefill and decode (engine/generate.py)
        return run_generation(request, events)
    settings = RunSettings(**request["settings"])
    sources = parse_sources(request.get("input_args", []))
    outcome = benchmark(_loader(request), _feeds_factory(request, sources), settings, events.progress,
                        on_phase=lambda phase: events.send(phase_event(phase)),
                        placement=request.get("placement", True))
    session = outcome.pop("session")
    feeds = outcome.pop("feeds")
    result = _describe(session)
    result["feeds"] = describe_feeds(feeds, sources)
    result.update(outcome)
    return result


def run_generation(request: dict, events: Events) -> dict:
    from edgebench.agent.engine.generate import GenerationSettings, benchmark_generation
    from edgebench.agent.engine.noise import phase_event

    outcome = benchmark_generation(_loader(request), GenerationSettings(**request["generation"]), events.progress,
                                   on_phase=lambda phase: events.send(phase_event(phase)))
    session = outcome.pop("session")
    result = _describe(session)
    session.close()
    result.update(outcome)
    return result


def run_score(request: dict, events: Events) -> dict:
    """A language model's drift material: the text scored token by token and a greedy continuation (generate.py)."""
    from edgebench.agent.engine.generate import ScoreSettings, score_text

    events.send({"type": "phase", "phase": "score"})
    return score_text(_loader(request), ScoreSettings(**request["score"]))


def run_infer(request: dict, events: Events) -> dict:
    """Run given input sets once each and save the outputs (compare's reference and candidate runs)."""
    import numpy as np

    from edgebench.agent.engine.measure import _guarded

    session = _loader(request)()
    events.send({"type": "phase", "phase": "infer"})
    with np.load(request["inputs_npz"], allow_pickle=False) as stored:
        count = int(stored["__count__"])
        sets = [{k.split("/", 1)[1]: stored[k] for k in stored.files if k.startswith(f"{i}/")}
                for i in range(count)]
    saved = {}
    for i, feeds in enumerate(sets):
        outputs = _guarded(lambda f=feeds: session.infer(f), f"inference on input set {i}")
        for name, array in outputs.items():
            saved[f"{i}/{name}"] = np.asarray(array)
    np.savez(request["outputs_npz"], **saved)
    return _describe(session)


def run_describe(request: dict, events: Events) -> dict:
    """Load the model and report its tensors and backend (compare needs them to build inputs)."""
    events.send({"type": "phase", "phase": "load"})
    return _describe(_loader(request)())


def serve(request: dict, events_fd: int) -> int:
    """Run one worker request, writing its events to ``events_fd``; the process's exit code."""
    events = Events(events_fd)
    try:
        from edgebench.agent.engine.noise import pin_cpus

        pin_cpus(request.get("cpus"))  # --cpus, before the runtime starts a thread: its threads inherit the mask
        handler = {"bench": run_bench, "infer": run_infer, "describe": run_describe,
                   "score": run_score}[request["mode"]]
        events.send({"type": "result", "result": handler(request, events)})
    except EdgebenchError as exc:
        events.send({"type": "error", "kind": type(exc).__name__, "message": str(exc)})
        return exc.exit_code
    except MemoryError:
        events.send({"type": "error", "kind": "ChildFailed", "message": "the runtime ran out of memory"})
        return 1
    return 0


def preload(runtime: str) -> None:
    """Import what every worker for this runtime imports (numpy, the protocol, the inputs, the runtime plugin and
    the runtime's own package), so a process forked afterwards starts with them (the zygote's preload). A
    runtime that cannot be imported is left to the worker, which reports why in the usual way."""
    import numpy  # noqa: F401

    from edgebench.agent.engine import inputs, measure  # noqa: F401
    from edgebench.agent.runtimes import runtime_class

    with contextlib.suppress(Exception):  # the worker's load says what is wrong, with the model's context
        runtime_class(runtime).preload()


def main() -> int:
    request_path, events_fd = sys.argv[1], int(sys.argv[2])
    with open(request_path) as handle:
        request = json.load(handle)
    return serve(request, events_fd)


if __name__ == "__main__":
    sys.exit(main())
