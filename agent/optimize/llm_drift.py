"""Drift of a language model's variant against its reference (the model it was made from): what a quantization costs
in words a user of the model cares about, all measured on the same fixed real text (the benchmark's prompt text,
engine/generate.py ScoreSettings).

- perplexity: exp of the mean negative log-probability of each next token of the text, teacher-forced; the variant's
  increase over the reference's is what the recommendation's budget judges (``--max-ppl-increase``);
- next-token agreement: how often the variant's most likely next token is the reference's, over the same positions;
- continuation agreement: both models continue the text's beginning greedily; the share of positions where the
  variant wrote the reference's token, and the first position where they part.

Each model is scored in a child process (worker mode ``score``), like every other model run.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable, Optional, Sequence

import numpy as np

from edgebench.agent.engine.generate import ScoreSettings
from edgebench.agent.engine.isolation import ChildLimits, run_isolated
from edgebench.agent.errors import EdgebenchError
from edgebench.agent.optimize.makers.base import Variant
from edgebench.agent.runtimes.base import RuntimeOptions


def scores(path: str, runtime: str, options: RuntimeOptions, limits: ChildLimits, settings: ScoreSettings) -> dict:
    """The model's log-probabilities of the text's next tokens, its top-1 at each position, its continuation."""
    request = {"mode": "score", "model": path, "runtime": runtime, "options": asdict(options),
               "score": settings.to_dict()}
    return run_isolated(request, limits).result


def perplexity(log_probs: Sequence[float]) -> float:
    return math.exp(-float(np.mean(log_probs)))


def drift(reference: dict, candidate: dict) -> dict:
    """The variant's numbers against the reference's (``scores`` of each, on the same text)."""
    ref_ppl, ppl = perplexity(reference["log_probs"]), perplexity(candidate["log_probs"])
    agree = np.asarray(reference["top1"]) == np.asarray(candidate["top1"])
    ref_cont, cont = reference["continuation"], candidate["continuation"]
    same = [a == b for a, b in zip(ref_cont, cont)]
    return {"perplexity": ppl, "reference_perplexity": ref_ppl, "perplexity_increase": ppl / ref_ppl - 1.0,
            "next_token_agreement": float(agree.mean()), "continuation_agreement": sum(same) / len(same),
            "first_divergence": same.index(False) if not all(same) else None, "scored_tokens": int(agree.size),
            "continuation_tokens": len(same), "text": reference["text"]}


def measure(rows: Sequence[Variant], runtime: str, options: RuntimeOptions, limits: ChildLimits,
            step: Callable[[str], None], settings: Optional[ScoreSettings] = None) -> None:
    """Each variant's drift (``rows[1:]``) against the reference (``rows[0]``, scored once); a variant that cannot be
    scored keeps its benchmark and says why."""
    settings = settings or ScoreSettings()
    step(f"scoring {rows[0].name} on the text (perplexity, next tokens, a greedy continuation)")
    reference = scores(str(rows[0].path), runtime, options, limits, settings)
    rows[0].notes.append(f"perplexity {perplexity(reference['log_probs']):.3f} on {reference['text']}")
    for variant in rows[1:]:
        if variant.error or not variant.path:
            continue
        step(f"drift of {variant.name}")
        try:
            variant.drift = drift(reference, scores(str(variant.path), runtime, options, limits, settings))
        except EdgebenchError as exc:
            variant.error = f"drift could not be measured: {exc}"


def render(model_name: str, rows: Sequence[Variant], advice: dict) -> str:
    """The language model's variants table: size, prefill and decode tokens/s, the inter-token p90 against the
    source (paired, repeats interleaved), and the drift on the text."""
    from edgebench.agent.engine.report import fmt_ratio, human_bytes, table

    headers = ["variant", "size", "prefill tok/s", "decode tok/s", "inter-token p90 vs source", "perplexity",
               "next token", "continuation"]
    base_size = rows[0].size_bytes
    body = []
    for row in rows:
        size = human_bytes(row.size_bytes) + (f" ({row.size_bytes / base_size:.0%})"
                                              if row is not rows[0] and row.size_bytes and base_size else "")
        generation = (row.report or {}).get("generation")
        if generation is None:
            body.append([row.name, size, "-", "-", "-", "-", "-", row.error or "failed"])
            continue
        drift = row.drift or {}
        body.append([row.name, size, f"{generation['prefill_tok_s']['estimate']:.1f}",
                     f"{generation['decode_tok_s']['estimate']:.1f}",
                     fmt_ratio(row.speedup_p90) if row is not rows[0] else "1.00x",
                     f"{drift['perplexity']:.3f} ({drift['perplexity_increase']:+.1%})" if drift else "-",
                     f"{drift['next_token_agreement']:.1%}" if drift else "-",
                     _continuation(drift)])
    lines = [f"variants of {model_name} (speed: repeats interleaved, 95% interval; drift vs {rows[0].name} on the "
             "fixed text)", *table(headers, body)]
    lines += [f"  {row.name}: {note}" for row in rows for note in row.notes]
    lines += [f"  {row.name}: {row.error}" for row in rows if row.error and row.report is not None]
    lines += [f"  {row.name}: outside the budgets: {'; '.join(advice['failures'][row.name])}" for row in rows[1:]
              if row.report is not None and row.drift and advice["failures"].get(row.name)]
    lines.append(advice["line"])
    return "\n".join(lines)


def _continuation(drift: dict) -> str:
    """``81% (parts at 13)``: greedy continuation tokens equal to the source's, and where they first differ."""
    if not drift:
        return "-"
    where = drift["first_divergence"]
    return f"{drift['continuation_agreement']:.0%}" + (f" (parts at {where})" if where is not None else "")
