"""llama.cpp runtime plugin: GGUF language models through llama-cpp-python's low-level bindings (``llama_cpp``, ctypes
over libllama).

Only the C API's primitives are used (load, context, tokenize, decode, logits): the engine's generation protocol
(engine/generate.py) times the prompt's prefill, each decode step and the greedy pick of each token, so nothing of
llama-cpp-python's high-level ``Llama`` class (its sampling chain, caches, logit copies) sits in a timed region.
Sampling is greedy (the most likely token), fixed so that runs compare. llama.cpp's own log goes to ``logging``
(debug), its errors are kept for the one-line message a failed load becomes.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import logging
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgebench.agent.errors import InferenceError, ModelError, RuntimeUnavailable, UsageError
from edgebench.agent.runtimes.base import Backend, GenerationSession, Runtime, RuntimeOptions
from edgebench.agent.runtimes.names import FORMATS
from edgebench.agent.tensors import TensorSpec

log = logging.getLogger(__name__)

_INSTALL = ("llama.cpp's Python bindings are not installed: pip install 'edgebench[llm]' on a board (it compiles "
            "llama.cpp), or `make llm` here (one cached build)")
SCORE_ROWS = 64  # positions whose log-softmax is computed at once when scoring a text
UBATCH = 512  # llama.cpp's default physical batch (llama-bench's too): a longer prompt is decoded in such steps
_LOG_LEVELS = {2: logging.ERROR, 3: logging.WARNING, 4: logging.INFO}  # ggml_log_level: 2 error, 3 warn, 4 info


class LlamaLog:
    """llama.cpp's log (process-wide: the latest LlamaLog receives it), into ``logging`` at debug; its last warnings
    and errors kept for error messages, and the lines ``keep`` picks (the quantizer's fallbacks) counted."""

    def __init__(self, llama_cpp: Any, keep: Optional[Callable[[str], bool]] = None):
        self.recent: collections.deque[str] = collections.deque(maxlen=8)
        self.kept: list[str] = []
        self._keep = keep
        self.callback = llama_cpp.llama_log_callback(self._line)  # kept: llama.cpp holds only the pointer
        llama_cpp.llama_log_set(self.callback, ctypes.c_void_p(0))

    def _line(self, level: int, text: bytes, user_data: Any) -> None:
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            log.debug("llama.cpp: %s", line)
            if _LOG_LEVELS.get(level, logging.DEBUG) >= logging.WARNING:
                self.recent.append(line)
            if self._keep is not None and self._keep(line):
                self.kept.append(line)

    def last_problem(self) -> str:
        return self.recent[-1] if self.recent else "no reason given"


def bindings() -> Any:
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError, FileNotFoundError) as exc:  # the package, or libllama, is missing
        raise RuntimeUnavailable(f"{_INSTALL} ({str(exc).splitlines()[0][:200]})") from None
    return llama_cpp


class LlamaCppSession(GenerationSession):
    def __init__(self, llama_cpp: Any, model: Any, path: str, threads: int, logger: LlamaLog):
        self._lib, self._model, self._log = llama_cpp, model, logger
        self._ctx: Any = None
        self._threads = threads
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._one = (llama_cpp.llama_token * 1)()
        self.context_length = int(llama_cpp.llama_model_n_ctx_train(model))
        self.inputs = [TensorSpec("prompt", "int32", ("tokens",))]
        self.outputs = [TensorSpec("logits", "float32", (self._n_vocab,))]
        description = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(model, description, len(description))
        self.backend = Backend(
            runtime=LlamaCppRuntime.name, module="llama_cpp", version=str(getattr(llama_cpp, "__version__", "?")),
            requested=[], used=["cpu"], threads=threads,
            notes=[f"model: {description.value.decode('utf-8', 'replace')}, "
                   f"{int(llama_cpp.llama_model_n_params(model)):,} parameters, "
                   f"context {self.context_length} tokens, vocabulary {self._n_vocab}",
                   "sampling: greedy"])

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        buffer = (self._lib.llama_token * room)()
        count = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, room, True, False)
        if count < 0:  # the buffer was short: -count tokens are needed
            room = -count
            buffer = (self._lib.llama_token * room)()
            count = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, room, True, False)
        return list(buffer[:count])

    def reserve(self, context: int, batch: int) -> None:
        self._free_context()
        params = self._lib.llama_context_default_params()
        params.n_ctx = context
        params.n_batch = max(batch, 1)
        params.n_ubatch = min(UBATCH, params.n_batch)
        params.n_threads = params.n_threads_batch = self._threads
        params.no_perf = True
        self._ctx = self._lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise InferenceError(f"llama.cpp could not make a context of {context} tokens: "
                                 f"{self._log.last_problem()}")

    def clear(self) -> None:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)

    def _decode(self, tokens: Any, count: int, what: str) -> None:
        code = self._lib.llama_decode(self._ctx, self._lib.llama_batch_get_one(tokens, count))
        if code != 0:
            raise InferenceError(f"llama.cpp failed to decode {what} (llama_decode returned {code}: "
                                 f"{self._log.last_problem()})")

    def prefill(self, tokens: Sequence[int]) -> None:
        self._decode((self._lib.llama_token * len(tokens))(*tokens), len(tokens), f"a prompt of {len(tokens)} tokens")

    def next_token(self) -> int:
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        return int(logits.argmax())

    def step(self, token: int) -> None:
        self._one[0] = token
        self._decode(self._one, 1, "a token")

    def score(self, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """One batch with every position's logits (``reserve`` made the context for them), read in slices so that
        the log-softmax never holds more than SCORE_ROWS rows of the vocabulary at once."""
        count = len(tokens)
        batch = self._lib.llama_batch_init(count, 0, 1)
        try:
            for position, token in enumerate(tokens):
                batch.token[position], batch.pos[position] = token, position
                batch.n_seq_id[position], batch.seq_id[position][0], batch.logits[position] = 1, 0, 1
            batch.n_tokens = count
            code = self._lib.llama_decode(self._ctx, batch)
            if code != 0:
                raise InferenceError(f"llama.cpp failed to score {count} tokens (llama_decode returned {code}: "
                                     f"{self._log.last_problem()})")
            logits = np.ctypeslib.as_array(self._lib.llama_get_logits(self._ctx), shape=(count, self._n_vocab))
            log_probs, top1 = np.empty(count - 1), np.empty(count - 1, dtype=np.int64)
            following = np.asarray(tokens[1:])
            for start in range(0, count - 1, SCORE_ROWS):
                rows = logits[start:min(start + SCORE_ROWS, count - 1)].astype(np.float64)
                peak = rows.max(axis=1, keepdims=True)
                normalizer = np.log(np.exp(rows - peak).sum(axis=1)) + peak[:, 0]
                picked = rows[np.arange(len(rows)), following[start:start + len(rows)]]
                log_probs[start:start + len(rows)] = picked - normalizer
                top1[start:start + len(rows)] = rows.argmax(axis=1)
            return log_probs, top1
        finally:
            self._lib.llama_batch_free(batch)

    def kv_cache_bytes(self) -> Optional[int]:
        """K and V (f16, llama.cpp's default cache type) for every layer and position of the context made: the
        model's shape times the context's size (llama.cpp rounds the context up)."""
        if not self._ctx:
            return None
        lib, model = self._lib, self._model
        head_dim = int(lib.llama_model_n_embd(model)) // max(int(lib.llama_model_n_head(model)), 1)
        per_token = 2 * int(lib.llama_model_n_layer(model)) * int(lib.llama_model_n_head_kv(model)) * head_dim * 2
        return per_token * int(lib.llama_n_ctx(self._ctx))

    def _free_context(self) -> None:
        if self._ctx:
            self._lib.llama_free(self._ctx)
            self._ctx = None

    def close(self) -> None:
        self._free_context()
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None


class LlamaCppRuntime(Runtime):
    name = "llamacpp"
    formats = FORMATS[name]

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        return None if importlib.util.find_spec("llama_cpp") else _INSTALL

    @classmethod
    def check_options(cls, options: RuntimeOptions) -> None:
        if options.chain_flags():
            raise UsageError(f"llama.cpp takes no {' or '.join(options.chain_flags())}: its backends are chosen when "
                             "it is built (docs/deploy.md)")

    @classmethod
    def preload(cls) -> None:
        bindings()

    def load(self, path: str, options: RuntimeOptions) -> LlamaCppSession:
        self.check_options(options)
        llama_cpp = bindings()
        logger = LlamaLog(llama_cpp)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0  # the CPU build; a GPU build's offload is a later option
        model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
        if not model:
            raise ModelError(f"llama.cpp could not load {path}: {logger.last_problem()}")
        threads = options.threads or os.cpu_count() or 1
        return LlamaCppSession(llama_cpp, model, path, threads, logger)
