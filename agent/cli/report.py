"""``edgebench report R.json [B.json ...] [--html FILE] [--csv DIR]``: bench reports (several: side by side, with
speed-ups over the first), a variants or a compare document, as a page of charts, its tables as CSV, or (neither
given, one bench report) the table ``bench`` printed (edgebench.agent.engine.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebench.agent.cli import args as cli_args


def register(commands) -> None:
    report = commands.add_parser("report", help="bench reports, a variants or a compare document as a "
                                 "self-contained HTML page of charts",
                                 description="Draw a `bench --json` report: its latency distribution (histogram "
                                 "and CDF with p50/p90/p99, per repeat), latency over the run, the sensors' "
                                 "readings and memory over the run, and with `bench --profile-ops` the time per op "
                                 "type. Several reports: their distributions side by side and each one's p50/p90 "
                                 "speed-up over the first with its 95% interval. A `variants --json` document: "
                                 "latency against size coloured by drift, the recommended variant ringed. A "
                                 "`compare --json` document: its drift and latency. Each chart with its numbers in "
                                 "a table. The page is one file that needs no network. Without --html or --csv: "
                                 "the table bench printed (one bench report).")
    report.add_argument("report", metavar="R.json", nargs="+",
                        help="bench reports (edgebench.bench/1 or /2; the first is the baseline), or one variants "
                        "(edgebench.variants/2) or compare (edgebench.compare/1) document")
    add_html_option(report)
    report.add_argument("--csv", metavar="DIR", help="write each chart's table as DIR/<chart>.csv")
    report.set_defaults(handler=run)


def add_html_option(parser: argparse.ArgumentParser) -> None:
    """--html FILE, for ``report`` and ``bench`` alike."""
    parser.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page of "
                        "charts and their tables (opens offline; see `edgebench report`)")


def write_outputs(report: dict, args: argparse.Namespace) -> None:
    """The page (and with ``report --csv``, the tables) of one document (a bench report, a variants or compare
    document): the one path ``report``, ``bench``, ``compare`` and ``variants`` share."""
    write_named([("report", report)], args)


def write_named(named: list, args: argparse.Namespace) -> None:
    """The page of several named documents (``report A.json B.json``), built by html/several.page_for."""
    from edgebench.agent.engine.html import page, several

    page.write(several.page_for(named), args.html, getattr(args, "csv", None))


def load_document(path: str) -> dict:
    """A bench report, or a variants or compare document; anything else is load_report's one line."""
    import json

    from edgebench.agent.engine.diff import load_report
    from edgebench.agent.engine.html import several
    from edgebench.agent.errors import UsageError

    try:
        return load_report(path, reader="report")
    except UsageError:
        try:  # the file is JSON when load_report got as far as its schema: a variants or compare document?
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError):
            document = None
        if isinstance(document, dict) and document.get("schema") in several.SCHEMAS:
            return document
        raise


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.html import several
    from edgebench.agent.engine.report import render
    from edgebench.agent.errors import UsageError

    cli_args.check_outputs(args, "html")
    if args.csv and Path(args.csv).exists() and not Path(args.csv).is_dir():
        raise UsageError(f"--csv {args.csv}: is not a folder")
    named = list(zip(several.names_for(args.report), (load_document(path) for path in args.report)))
    several.check_together(named)
    if args.html or args.csv:
        write_named(named, args)
    elif len(named) == 1 and several.kind(named[0][1]) == "bench":
        print(render(named[0][1]))
    else:
        raise UsageError("report: several reports, a variants or a compare document are drawn with --html FILE "
                         "and/or --csv DIR")
    return 0
