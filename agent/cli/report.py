"""``edgebench report R.json [--html FILE] [--csv DIR]``: one bench report as a page of charts, its tables as CSV,
or (neither given) the table ``bench`` printed (edgebench.agent.engine.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebench.agent.cli import args as cli_args


def register(commands) -> None:
    report = commands.add_parser("report", help="one bench report as a self-contained HTML page of charts",
                                 description="Draw a `bench --json` report: its latency distribution (histogram "
                                 "and CDF with p50/p90/p99, per repeat), latency over the run, the sensors' "
                                 "readings and memory over the run, and with `bench --profile-ops` the time per op "
                                 "type; each chart with its numbers in a table. The page is one file that needs "
                                 "no network. Without --html or --csv: the table bench printed.")
    report.add_argument("report", metavar="R.json", help="a bench report (edgebench.bench/1 or /2)")
    add_html_option(report)
    report.add_argument("--csv", metavar="DIR", help="write each chart's table as DIR/<chart>.csv")
    report.set_defaults(handler=run)


def add_html_option(parser: argparse.ArgumentParser) -> None:
    """--html FILE, for ``report`` and ``bench`` alike."""
    parser.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page of "
                        "charts and their tables (opens offline; see `edgebench report`)")


def write_outputs(report: dict, args: argparse.Namespace) -> None:
    """The page (and with ``report --csv``, the tables) of one report: the one path ``report`` and ``bench`` share."""
    from edgebench.agent.engine.html import page

    page.write(report, args.html, getattr(args, "csv", None))


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.diff import load_report
    from edgebench.agent.engine.report import render
    from edgebench.agent.errors import UsageError

    cli_args.check_outputs(args, "html")
    if args.csv and Path(args.csv).exists() and not Path(args.csv).is_dir():
        raise UsageError(f"--csv {args.csv}: is not a folder")
    document = load_report(args.report, reader="report")
    if args.html or args.csv:
        write_outputs(document, args)
    else:
        print(render(document))
    return 0
