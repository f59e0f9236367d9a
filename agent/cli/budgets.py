"""The recommendation's budgets as command-line options, for `variants` and `push --reference` (docs/variants.md)."""

from __future__ import annotations

import argparse

from edgebench.agent.cli import args as cli_args


def add_budget_options(parser: argparse.ArgumentParser, what: str = "the variant to ship") -> None:
    group = parser.add_argument_group("the recommendation (docs/variants.md)")
    group.add_argument("--objective", choices=("latency", "size", "energy"), default="latency",
                       help=f"what {what} should be best at, within the budgets (default latency)")
    group.add_argument("--min-agreement", type=cli_args.number_in(0, 1, ""), default=0.98, metavar="F",
                       help="least top-1 agreement with the float model, for classifier outputs (default 0.98)")
    group.add_argument("--min-cosine", type=cli_args.number_in(0, 1, ""), default=0.99, metavar="F",
                       help="least mean cosine similarity with the float model's outputs (default 0.99)")
    group.add_argument("--max-drift", type=cli_args.number_in(0, 1e9, ""), metavar="F",
                       help="largest max abs error, as a fraction of the float output's range (default: not judged)")
    group.add_argument("--max-ppl-increase", type=cli_args.number_in(0, 1e9, ""), default=0.05, metavar="F",
                       help="a language model (GGUF): largest perplexity increase over the source on the fixed text, "
                       "as a fraction (default 0.05: +5%%)")


def budgets(args: argparse.Namespace):
    from edgebench.agent.optimize.recommend import Budgets

    return Budgets(min_agreement=args.min_agreement, min_cosine=args.min_cosine, max_drift=args.max_drift,
                   objective=args.objective, max_ppl_increase=args.max_ppl_increase)
