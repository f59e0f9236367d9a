"""The generation protocol: a language model's benchmark (a runtime whose Session is a GenerationSession).

Where ``measure.benchmark`` times one inference over and over, a generation has phases of its own, timed here with
perf_counter_ns around the runtime's primitives and nothing else:

- load: the model file into memory;
- warm-up: one whole prefill of the prompt and one decode step (what llama.cpp's llama-bench warms up with), then
  the context is emptied;
- prefill: the prompt's ``prompt_tokens`` tokens decoded in one call; time to first token (TTFT) adds the greedy
  pick of the first token to it;
- decode: ``gen_tokens`` steps, each one token decoded and the next picked: every step's time is kept (the
  inter-token latency), and their sum is the decode time that decode tokens/s is counted over.

The prompt is real text (``data/prompt.txt``: the "Execution model", "Naming and binding", "Exceptions" and
"Assignment statements" sections of the Python 3.11 language reference, from CPython's pydoc_data, PSF licence),
read by the model's own tokenizer and cut to ``prompt_tokens`` (repeated when the text is shorter). Sampling is
greedy, so every run of one model generates the same tokens.

The result has the shape of ``measure.benchmark``'s (the worker-result contract): its latency samples are the decode
steps, so the statistics, intervals, physics (energy per decode step is energy per token) and fleet summaries apply
as they are; ``generation`` adds what is particular to it (bench.py pools it over the repeats).
"""

from __future__ import annotations

import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from edgebench.agent.engine import memory
from edgebench.agent.engine.measure import ProgressFn, _guarded, memory_checkpoints, timed_load
from edgebench.agent.errors import UsageError
from edgebench.agent.runtimes.base import GenerationSession

if TYPE_CHECKING:  # the report's energy only: a worker never imports the sensors
    from edgebench.agent.engine.physics import RunPhysics
    from edgebench.agent.engine.physics.sampler import Series

PROMPT_TEXT = Path(__file__).parent / "data" / "prompt.txt"
MAX_TOKENS = 1 << 20  # a prompt or a generation longer than any model's context: a typo, refused with the others
KEPT_TOKENS = 64  # the generated tokens a result keeps (greedy continuations are compared by them)


@dataclass
class GenerationSettings:
    prompt_tokens: int = 512  # llama-bench's pp512
    gen_tokens: int = 128  # llama-bench's tg128
    prompt_file: Optional[str] = None  # None: PROMPT_TEXT

    def validate(self) -> None:
        if not 1 <= self.prompt_tokens <= MAX_TOKENS or not 1 <= self.gen_tokens <= MAX_TOKENS:
            raise UsageError(f"--prompt-tokens and --gen-tokens must be from 1 to {MAX_TOKENS:,}")
        if self.prompt_file is not None:
            path = Path(self.prompt_file)
            if not path.is_file():
                raise UsageError(f"--prompt-file {self.prompt_file}: no such file")

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_text(settings: GenerationSettings) -> tuple[str, str]:
    """The prompt's text and where it came from."""
    path = Path(settings.prompt_file) if settings.prompt_file else PROMPT_TEXT
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--prompt-file {path}: cannot be read as UTF-8 text ({exc})") from None
    if not text.strip():
        raise UsageError(f"--prompt-file {path} is empty")
    return text, path.name


def prompt_tokens(session: GenerationSession, settings: GenerationSettings) -> tuple[list[int], dict]:
    """The prompt's tokens, exactly ``prompt_tokens`` of them, and its description for the report."""
    text, source = prompt_text(settings)
    tokens = session.tokenize(text)
    if not tokens:
        raise UsageError(f"the prompt {source} has no tokens for this model's tokenizer")
    wanted = settings.prompt_tokens
    repeated = wanted > len(tokens)
    prompt = (tokens * (wanted // len(tokens) + 1))[:wanted]
    return prompt, {"name": "prompt", "dtype": "int32", "shape": [wanted],
                    "source": f"{source}, the first {wanted} of its {len(tokens)} tokens"
                    + (" (the text repeated)" if repeated else ""), "tokens": wanted, "text_tokens": len(tokens),
                    "repeated": repeated}


def check_context(session: GenerationSession, settings: GenerationSettings) -> int:
    """The context the generation needs (the prompt, then one position per decode step), refused in one line when
    the model was trained for less."""
    needed = settings.prompt_tokens + settings.gen_tokens
    if needed > session.context_length:
        raise UsageError(f"--prompt-tokens {settings.prompt_tokens} and --gen-tokens {settings.gen_tokens} need a "
                         f"context of {needed} tokens; this model's is {session.context_length}")
    return needed


@dataclass
class Generation:
    start_ns: int  # perf_counter_ns at the prefill's start: the monotonic clock the board's sensors are sampled on
    prefill_ns: int
    ttft_ns: int
    step_start_ns: array  # perf_counter_ns at each decode step's start
    step_ns: array  # each decode step: one token decoded and the next picked
    tokens: list  # the generated tokens, the first (from the prefill) included


def generate(session: GenerationSession, prompt: list[int], steps: int, progress: Optional[ProgressFn] = None,
             progress_interval_s: float = 0.5) -> Generation:
    """One generation from an empty context: the prompt's prefill, the first token, then ``steps`` decode steps."""
    clock = time.perf_counter_ns
    prefill, step, pick = session.prefill, session.step, session.next_token
    starts, latencies = array("q"), array("q")
    t0 = clock()
    prefill(prompt)
    prefilled = clock()
    token = pick()
    first = clock()
    tokens = [token]
    interval_ns = int(progress_interval_s * 1e9)
    next_report = first + interval_ns
    for index in range(steps):
        begin = clock()
        step(token)
        token = pick()
        end = clock()
        starts.append(begin)
        latencies.append(end - begin)
        tokens.append(token)
        if progress is not None and end >= next_report:
            progress("decode", index + 1, (end - first) / 1e9)
            next_report = end + interval_ns
    return Generation(t0, prefilled - t0, first - t0, starts, latencies, tokens)


def benchmark_generation(load: Callable[[], GenerationSession], settings: GenerationSettings,
                         progress: Optional[ProgressFn] = None,
                         on_phase: Optional[Callable[[str], None]] = None) -> dict:
    """Load, warm up, then one measured generation; the result in ``measure.benchmark``'s shape plus
    ``generation``. ``on_phase`` is told ``measure`` and ``measured`` around the measured generation (the noise
    counters, engine/noise.py)."""
    session, load_ns, rss_before_load, rss_after_load = timed_load(load, progress)
    prompt, described = prompt_tokens(session, settings)
    context = check_context(session, settings)
    _guarded(lambda: session.reserve(context, settings.prompt_tokens), "making the context")
    if progress:
        progress("warmup", 0, 0.0)
    warmup = _guarded(lambda: generate(session, prompt, 1), "the warm-up generation")
    session.clear()
    load_peak = memory.peak_rss()
    can_reset = memory.reset_peak()
    rss_before_measure = memory.current_rss()
    if progress:
        progress("prefill", 0, 0.0)
    if on_phase:
        on_phase("measure")
    measured = _guarded(lambda: generate(session, prompt, settings.gen_tokens, progress), "the generation")
    if on_phase:
        on_phase("measured")
    steady_peak = memory.peak_rss() if can_reset else None
    origin = measured.step_start_ns[0]
    decode_ns = sum(measured.step_ns)
    wall_ns = measured.step_start_ns[-1] + measured.step_ns[-1] - origin
    return {
        "session": session,
        "feeds": [described],
        "placement": None,
        "ops": None,
        "timing": {
            "load_ms": load_ns / 1e6,
            "first_inference_ms": warmup.ttft_ns / 1e6,  # the first prefill, cold
            "warmup": {"runs": 1, "duration_s": (warmup.ttft_ns + sum(warmup.step_ns)) / 1e9},
            "measured": {"runs": len(measured.step_ns), "duration_s": wall_ns / 1e9, "reached_min_runs": True,
                         "reached_min_duration": True, "origin_monotonic_ns": origin},
        },
        "samples": {"latency_ns": measured.step_ns.tolist(),
                    "start_offset_ns": [start - origin for start in measured.step_start_ns]},
        "wall_ns": wall_ns,
        # the measured generation's peak alone: its context was made before
        "memory": memory_checkpoints(rss_before_load, rss_after_load, load_peak, rss_before_measure, steady_peak,
                                     can_reset),
        "generation": {
            "prompt_tokens": settings.prompt_tokens,
            "gen_tokens": settings.gen_tokens,
            "context": context,
            "kv_cache_bytes": session.kv_cache_bytes(),
            "prefill_start_ns": measured.start_ns,
            "prefill_ns": measured.prefill_ns,
            "ttft_ns": measured.ttft_ns,
            "decode_ns": decode_ns,
            "tokens": measured.tokens[:KEPT_TOKENS],
        },
    }


# ---------------------------------------------------------------- the report's ``generation`` section

def _metric(per_repeat: list[float], unit: str) -> dict:
    """A number per repeat and its estimate: the geometric mean with a confidence interval and a rerun interval
    from the spread between repeats (stats.log_interval, as latency's), or the one value of a single repeat."""
    from edgebench.agent.engine import stats

    ci, rerun = stats.log_interval(per_repeat), stats.log_interval(per_repeat, rerun=True)
    return {"estimate": ci[0] if ci else per_repeat[0], "unit": unit, "per_repeat": per_repeat,
            "ci": [ci[1], ci[2]] if ci else None, "rerun": [rerun[1], rerun[2]] if rerun else None}


def pooled(results: list[dict], latency_stats: dict) -> dict:
    """The report's ``generation``: the settings, TTFT and prefill and decode tokens/s per repeat with their
    intervals, the inter-token percentiles (the report's latency statistics: decode steps are its samples), the KV
    cache, and whether every repeat generated the same tokens (greedy sampling: they should)."""
    parts = [r["generation"] for r in results]
    first = parts[0]
    return {
        "prompt_tokens": first["prompt_tokens"],
        "gen_tokens": first["gen_tokens"],
        "context": first["context"],
        "kv_cache_bytes": first["kv_cache_bytes"],
        "sampling": "greedy",
        "ttft_ms": _metric([p["ttft_ns"] / 1e6 for p in parts], "ms"),
        "prefill_tok_s": _metric([p["prompt_tokens"] / (p["prefill_ns"] / 1e9) for p in parts], "tokens/s"),
        "decode_tok_s": _metric([p["gen_tokens"] / (p["decode_ns"] / 1e9) for p in parts], "tokens/s"),
        "inter_token_ms": {key: latency_stats.get(f"{key}_ms") for key in ("p50", "p90", "p99")},
        "tokens": first["tokens"],
        "same_tokens_every_repeat": all(p["tokens"] == first["tokens"] for p in parts),
        "energy_per_token_mj": None,  # set from the board's power samples (bench.add_physics: add_energy)
        "prefill_energy_per_token_mj": None,
        "prefill_energy": None,
    }


def prefill_window(result: dict) -> list[int]:
    """A repeat's prefill on the monotonic clock, [start, end] in ns: the window its prefill energy is taken over."""
    start = result["generation"]["prefill_start_ns"]
    return [start, start + result["generation"]["prefill_ns"]]


def add_energy(report: dict, physics: RunPhysics, series: Series) -> None:
    """Energy per decoded token: the measured phase's energy per inference, each decode step being one token. Energy
    per prompt token: the same integral (net of idle) over each repeat's prefill window instead, shared by its
    prompt tokens; ``prefill_energy`` says how many power samples it rests on (a prefill shorter than the sampling
    period is interpolated between the samples around it)."""
    generation = report.get("generation")
    if generation is None:
        return
    generation["energy_per_token_mj"] = ((report.get("physics") or {}).get("energy") or {}).get(
        "energy_per_inference_mj")
    windows = [(*entry["prefill_monotonic_ns"], generation["prompt_tokens"]) for entry in report["repeats"]]
    prefill = physics.energy(series, windows)
    generation["prefill_energy"] = prefill
    generation["prefill_energy_per_token_mj"] = (prefill or {}).get("energy_per_inference_mj")


# ---------------------------------------------------------------- scoring a text (drift of a language model)

@dataclass
class ScoreSettings:
    """What a language model's drift is measured on: the prompt text's first ``tokens`` tokens, teacher-forced
    (perplexity, next-token agreement), and a greedy continuation of ``continuation`` tokens after its first
    ``prompt_tokens``."""

    tokens: int = 512
    prompt_tokens: int = 64
    continuation: int = 32
    prompt_file: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def score_text(load: Callable[[], GenerationSession], settings: ScoreSettings) -> dict:
    """The model's log-probability of each next token of the text and its own top-1 there, and its greedy
    continuation of the text's beginning (plain lists: the worker's result)."""
    session = load()
    text_settings = GenerationSettings(prompt_tokens=settings.tokens, gen_tokens=1, prompt_file=settings.prompt_file)
    tokens, described = prompt_tokens(session, text_settings)
    context = max(settings.tokens, settings.prompt_tokens + settings.continuation)
    if context > session.context_length:
        raise UsageError(f"scoring {settings.tokens} tokens needs a context of {context}; this model's is "
                         f"{session.context_length}")
    _guarded(lambda: session.reserve(context, settings.tokens), "making the context")
    log_probs, top1 = _guarded(lambda: session.score(tokens), "scoring the text")
    session.clear()
    continued = _guarded(lambda: generate(session, tokens[:settings.prompt_tokens], settings.continuation - 1),
                         "the greedy continuation")
    session.close()
    return {"log_probs": log_probs.tolist(), "top1": top1.tolist(), "continuation": continued.tokens,
            "text": described["source"]}
