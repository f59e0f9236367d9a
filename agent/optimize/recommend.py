"""Which variant to ship: the one that best serves the objective (latency, size or energy) among those within the
accuracy budgets, said in one line with its evidence (docs/variants.md, "The recommendation").

A variant is within budget when its drift against the float model is: top-1 agreement at least ``min_agreement``
(classifier outputs), mean cosine similarity at least ``min_cosine`` (every output), and, when given, its max abs
error at most ``max_drift`` of the float output's range. The float model is always within budget: it is the fallback.

Latency: the variant whose p90 speed-up over the float model is largest, among those faster beyond noise (the
speed-up's 95% interval above 1; repeats interleaved and paired, bench.speedup); when none is, ship the float model.
Size: the smallest file within budget that is not slower beyond noise. Energy: the lowest energy per inference
(above idle), where a power sensor measured it; without one, latency decides and the line says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from edgebench.agent.errors import UsageError
from edgebench.agent.optimize.makers.base import Variant

OBJECTIVES = ("latency", "size", "energy")


@dataclass
class Budgets:
    min_agreement: float = 0.98  # top-1 agreement with the float model, classifier outputs
    min_cosine: float = 0.99  # mean cosine similarity of the outputs
    max_drift: Optional[float] = None  # max abs error as a fraction of the float output's range; None: not judged
    objective: str = "latency"
    max_ppl_increase: float = 0.05  # a language model's perplexity over its reference's, minus 1 (llm_drift.py)

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        for name in ("min_agreement", "min_cosine"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"--{name.replace('_', '-')} must be from 0 to 1")
        if self.max_drift is not None and self.max_drift < 0:
            raise UsageError("--max-drift must not be negative")
        if self.max_ppl_increase < 0:
            raise UsageError("--max-ppl-increase must not be negative")

    def to_dict(self) -> dict:
        return asdict(self)


def budget_failures(row: Variant, budgets: Budgets) -> list[str]:
    """Why ``row`` is outside the budgets (empty: within them); a variant without a drift measurement is outside."""
    if row.error or row.report is None:
        return [row.error or "not measured"]
    drift = row.drift
    if not drift:
        return ["drift not measured"]
    if "perplexity_increase" in drift:  # a language model (llm_drift.py): judged by its perplexity on the text
        increase = drift["perplexity_increase"]
        return [f"perplexity +{increase:.1%} > +{budgets.max_ppl_increase:.0%}"] \
            if increase > budgets.max_ppl_increase else []
    failures = []
    agreement = drift.get("top1_agreement")
    if agreement is not None and agreement < budgets.min_agreement:
        failures.append(f"top-1 agreement {agreement:.1%} < {budgets.min_agreement:.0%}")
    if drift["cosine_mean"] < budgets.min_cosine:
        failures.append(f"cosine {drift['cosine_mean']:.4f} < {budgets.min_cosine:g}")
    relative = relative_drift(drift)
    if budgets.max_drift is not None and relative is not None and relative > budgets.max_drift:
        failures.append(f"max abs error {relative:.1%} of the output's range > {budgets.max_drift:.1%}")
    return failures


def relative_drift(drift: dict) -> Optional[float]:
    spread = drift.get("reference_range")
    return drift["max_abs_err"] / spread if spread else None


def _faster(row: Variant) -> bool:
    ci = (row.speedup_p90 or {}).get("ci")
    return bool(ci) and ci[0] > 1


def _slower(row: Variant) -> bool:
    ci = (row.speedup_p90 or {}).get("ci")
    return bool(ci) and ci[1] < 1


def _energy(row: Variant) -> Optional[float]:
    energy = ((row.report or {}).get("physics") or {}).get("energy") or {}
    return energy.get("energy_per_inference_mj")


def choose(base: Variant, within: Sequence[Variant], objective: str) -> tuple[Variant, Optional[str]]:
    """The variant to ship and, when the objective could not be judged as asked, why."""
    if objective == "energy":
        measured = [row for row in within if _energy(row) is not None]
        if _energy(base) is not None and measured:
            best = min(measured, key=_energy)
            return (best, None) if _energy(best) < _energy(base) else (base, None)
        objective, note = "latency", "no power sensor measured energy here: chosen by latency"
    else:
        note = None
    if objective == "size":
        candidates = [row for row in within if not _slower(row) and row.size_bytes]
        best = min(candidates, key=lambda row: row.size_bytes, default=None)
        return (best, note) if best and best.size_bytes < (base.size_bytes or 0) else (base, note)
    faster = [row for row in within if _faster(row)]
    best = max(faster, key=lambda row: row.speedup_p90["estimate"], default=None)
    return (best or base), note


def evidence(row: Variant, base: Variant, budgets: Budgets) -> str:
    """``p90 1.9x faster [1.7, 2.1] than float32, 3.9x smaller, top-1 agreement 99.2% (budget >= 98%)``."""
    parts = []
    ratio = row.speedup_p90 or {}
    if ratio.get("estimate"):
        ci = ratio.get("ci")
        interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        word = "faster" if ratio["estimate"] >= 1 else "slower"
        factor = ratio["estimate"] if ratio["estimate"] >= 1 else 1 / ratio["estimate"]
        what = "inter-token p90" if (row.report or {}).get("generation") else "p90"
        parts.append(f"{what} {factor:.2f}x {word}{interval} than {base.name}")
    if row.size_bytes and base.size_bytes:
        parts.append(f"{base.size_bytes / row.size_bytes:.1f}x smaller")
    drift = row.drift or {}
    if "perplexity_increase" in drift:
        parts.append(f"perplexity {drift['perplexity_increase']:+.1%} (budget <= +{budgets.max_ppl_increase:.0%}), "
                     f"next-token agreement {drift['next_token_agreement']:.1%}")
    elif drift.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {drift['top1_agreement']:.1%} (budget >= {budgets.min_agreement:.0%})")
    elif drift:
        parts.append(f"cosine {drift['cosine_mean']:.4f} (budget >= {budgets.min_cosine:g})")
    if _energy(row) is not None and _energy(base):
        parts.append(f"{_energy(row):.3g} mJ per inference ({_energy(row) / _energy(base):.0%} of {base.name}'s)")
    return ", ".join(parts)


def recommend(rows: Sequence[Variant], budgets: Budgets) -> dict:
    """The recommendation: the variant to ship (``rows[0]``, the float model, when no variant serves the objective
    better within the budgets), the one-line verdict, and each variant's budget failures."""
    base, variants = rows[0], list(rows[1:])
    failures = {row.name: budget_failures(row, budgets) for row in variants}
    within = [row for row in variants if not failures[row.name]]
    chosen, note = choose(base, within, budgets.objective)
    if chosen is not base:
        line = f"ship {chosen.name}: {evidence(chosen, base, budgets)}"
    elif not within:
        measured = [row for row in variants if row.report is not None and row.drift]
        best = max(measured, key=lambda row: (row.speedup_p90 or {}).get("estimate") or 0, default=None)
        line = f"ship {base.name}: no variant meets the budgets"
        if best is not None:
            line += f"; best is {best.name} ({'; '.join(failures[best.name])})"
    else:
        goal = {"latency": "faster beyond noise", "size": "smaller without being slower",
                "energy": "more frugal"}[budgets.objective]
        line = f"ship {base.name}: no variant within the budgets is {goal}"
        runner = max(within, key=lambda row: (row.speedup_p90 or {}).get("estimate") or 0)
        line += f" (closest: {runner.name}, {evidence(runner, base, budgets)})"
    if note:
        line += f" ({note})"
    return {"variant": chosen.name, "objective": budgets.objective, "budgets": budgets.to_dict(), "line": line,
            "within_budgets": [row.name for row in within], "failures": failures, "note": note}
