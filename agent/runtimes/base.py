"""The runtime plugin interface: a runtime loads a model into a Session; a Session runs inferences.

Plugins never time anything and never compute statistics: the measurement protocol (measure.py) owns that,
so every runtime is measured the same way. A plugin's whole job is to load, describe its tensors, bind
inputs, and hand back the cheapest callable that performs one inference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np

from edgebench.agent.tensors import TensorSpec


@dataclass
class RuntimeOptions:
    threads: Optional[int] = None
    # Ordered fallback chains: TFLite delegates (names or .so paths) and ONNX Runtime execution providers.
    delegates: Sequence[str] = ()
    providers: Sequence[str] = ()
    delegate_options: dict = field(default_factory=dict)

    def chain_flags(self) -> list[str]:
        """The chain options given, as the command line spells them: what a runtime that takes no chain refuses."""
        flags = [f"--delegate {','.join(self.delegates)}" if self.delegates else "",
                 f"--providers {','.join(self.providers)}" if self.providers else "",
                 "--delegate-option" if self.delegate_options else ""]
        return [flag for flag in flags if flag]


@dataclass
class Fallback:
    candidate: str
    reason: str


@dataclass
class Backend:
    """What actually ran: filled in by the plugin, copied into the report."""

    runtime: str
    module: str
    version: str
    requested: list = field(default_factory=list)
    used: list = field(default_factory=list)
    fallbacks: list = field(default_factory=list)  # list[Fallback]
    threads: Optional[int] = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Node:
    """One node of the model's graph, where it ran: ``backend`` is the delegate or execution provider's name as the
    chain spells it (``xnnpack``, ``gpu``, ``CUDAExecutionProvider``), ``cpu`` for a runtime's own kernels;
    ``partition`` numbers the delegate kernel (or the run of consecutive nodes) that took it."""

    name: str
    op: str
    backend: str
    partition: int


@dataclass
class Placement:
    """Where the model's nodes ran, as the runtime itself says: the raw node list; engine/ops.py counts it."""

    source: str  # how it was read, e.g. "litert-graph", "onnxruntime-profiler"
    first_choice: str  # the chain's first entry: what coverage is measured against
    nodes: list = field(default_factory=list)  # list[Node], in execution order

    def to_dict(self) -> dict:
        return asdict(self)


class OpProfiler(ABC):
    """A runtime's own per-op profiler around a session of the same model (``Session.op_profiler``). The engine
    times the callable ``bind`` returns like any inference; ``collect`` returns, per node, its time in each
    profiled run, read from the runtime's own events: nothing is estimated."""

    source: str

    @abstractmethod
    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        """The callable that runs one profiled inference."""

    @abstractmethod
    def collect(self, runs: int) -> list[dict]:
        """``[{"name", "op", "backend", "duration_ns": [one per profiled run]}]`` in execution order, for the
        last ``runs`` runs (the earlier ones were its warm-up)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Session(ABC):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    backend: Backend

    @abstractmethod
    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        """Set the inputs (resizing tensors where shapes changed) and return a callable that runs exactly
        one inference. The engine times that callable, so it must do nothing else."""

    @abstractmethod
    def fetch_outputs(self, result: Any) -> dict[str, np.ndarray]:
        """Output arrays after a call of the bound callable (``result`` is what it returned)."""

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        run = self.bind(feeds)
        return self.fetch_outputs(run())

    def placement(self, feeds: dict[str, np.ndarray]) -> Optional[Placement]:
        """Where each node ran (``feeds``: the run's inputs, for a runtime that must run the model to tell); called
        after the measured phase, outside every timed region. None: this runtime cannot say."""
        return None

    def op_profiler(self) -> OpProfiler | str:
        """A per-op profiler for this session's model (``--profile-ops``), or the reason this runtime has none."""
        return f"{self.backend.runtime} exposes no per-op profiler"

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class GenerationSession(Session):
    """A language model's session (``Runtime.load`` of a runtime in names.GENERATES). Its benchmark is a generation,
    timed by the engine (engine/generate.py) through these primitives, each doing one thing and timing nothing: the
    prompt's tokens decoded in one batch (``prefill``), the next token picked greedily from the last logits
    (``next_token``: fixed sampling, so runs compare), one token decoded (``step``), the context emptied (``clear``).
    ``bind`` is not used: a generation is not one callable."""

    context_length: int  # the model's trained context (tokens)

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """The text as the model's own tokenizer reads it (with its beginning-of-text token where it has one)."""

    @abstractmethod
    def reserve(self, context: int, batch: int) -> None:
        """Make the context for ``context`` tokens, taking up to ``batch`` tokens in one decode call."""

    @abstractmethod
    def clear(self) -> None:
        """Empty the context (the KV cache), so the next prefill starts at position 0."""

    @abstractmethod
    def prefill(self, tokens: Sequence[int]) -> None:
        """Decode these tokens after what the context holds, in one batch (logits for the last only)."""

    @abstractmethod
    def next_token(self) -> int:
        """The most likely next token after the last decode."""

    @abstractmethod
    def step(self, token: int) -> None:
        """Decode one token after what the context holds."""

    @abstractmethod
    def kv_cache_bytes(self) -> Optional[int]:
        """What the reserved context's KV cache takes, as the runtime allocated it."""

    def score(self, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced, from an empty context: for each position ``i`` but the last, the log-probability the model
        gives ``tokens[i + 1]`` and its own most likely token there (drift: perplexity and next-token agreement
        against a reference model)."""
        raise NotImplementedError

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        raise NotImplementedError("a generation session is timed through prefill and step (engine/generate.py)")

    def fetch_outputs(self, result: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError("a generation session has no single inference's outputs")


class Runtime(ABC):
    """A runtime plugin: loads a model into a Session inside the Python worker, which runs the engine's protocol
    around it. A program that runs the whole protocol itself is an executor instead (agent/engine/executors/)."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # model formats it runs (modelfile.TFLITE, modelfile.ONNX)

    @classmethod
    @abstractmethod
    def unavailable_reason(cls) -> Optional[str]:
        """None when the runtime can be used here, else a message saying how to install it."""

    @abstractmethod
    def load(self, path: str, options: RuntimeOptions) -> Session:
        """Load the model; raise ModelError for a bad model, RuntimeUnavailable when nothing can run it."""

    @classmethod  # noqa: B027 - an optional hook
    def check_options(cls, options: RuntimeOptions) -> None:
        """Refuse, with a UsageError naming what this runtime takes, options it has no use for: a chain entry it
        does not know, delegates given to a runtime of execution providers or the reverse, delegate options with
        no delegate to take them. ``load`` calls it first: silently ignored, such an option measures something
        else than what was asked."""

    @classmethod  # noqa: B027 - an optional hook
    def preload(cls) -> None:
        """Import what ``load`` imports (the runtime's own package), without loading anything. The engine's
        zygote (engine/zygote.py) calls it once per benchmark run, so each fresh worker it forks pays the model's
        load, not the runtime's import. Failing here is harmless: ``load`` reports the problem in the worker."""
