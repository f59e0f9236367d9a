"""``edgebench diff A.json B.json``: two bench reports side by side (edgebench.agent.engine.diff)."""

from __future__ import annotations

import argparse

from edgebench.agent.cli import args as cli_args

MAX_TOP = 10_000


def register(commands) -> None:
    diff = commands.add_parser("diff", help="two bench reports side by side: latency, memory, placement, op times",
                               description="Put two `bench --json` reports side by side (e.g. a float model and "
                               "its int8 variant): p50/p90/p99 and B's speed-up over A with its interval, memory, "
                               "model size, where the nodes ran, and with `bench --profile-ops` in both, the time "
                               "per op type and how it changed.")
    diff.add_argument("a", metavar="A.json", help="the reference report (edgebench.bench/1 or /2)")
    diff.add_argument("b", metavar="B.json", help="the report compared with it")
    diff.add_argument("--top", type=cli_args.int_in(0, MAX_TOP), default=15, metavar="N",
                      help="op-type rows printed, largest change first (default 15; 0: all)")
    diff.add_argument("--json", metavar="FILE", help="write the comparison (edgebench.diff/1) as JSON; - for stdout "
                      "instead of the table")
    diff.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.engine import diff
    from edgebench.agent.engine.report import emit_json

    cli_args.check_outputs(args, "json")
    document = diff.compare(diff.load_report(args.a), diff.load_report(args.b), args.a, args.b)
    emit_json(document, args.json)
    if args.json != "-":
        print(diff.render(document, args.top))
    return 0
