"""`edgebench gate`: release gates in CI (docs/gates.md). A CI job's command, registered with the collector's
commands: a board never carries it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgebench.agent.cli.args import add_server_ca_option, check_outputs, check_url
from edgebench.agent.errors import EdgebenchError, UsageError


def register(commands) -> None:
    gate = commands.add_parser("gate", help="release gates: latency budgets and regressions against a baseline",
                               description="Evaluate [[gate]] rules (docs/gates.md) on every matching model x board "
                               "class x configuration. Exit 0 when all pass, 1 when a rule fails, 2 when data is "
                               "missing, 6 when a regression cannot be told yet (more repeats would decide).")
    # --rules, not --config: --config is every command's defaults file (docs/cli.md), before or after the command.
    gate.add_argument("--rules", required=True, metavar="GATES.toml", help="the [[gate]] rules (docs/gates.md)")
    gate.add_argument("--reports", nargs="+", metavar="FILE", help="bench / variants JSON reports to judge")
    gate.add_argument("--labels", metavar="K=V,...", help="labels for reports that carry none (e.g. class=rpi5)")
    gate.add_argument("--server", metavar="URL", help="judge the fleet's latest results held by this collector "
                      "(with their repeats)")
    gate.add_argument("--token", metavar="TOKEN", help="the collector's bearer token (read; submit to record "
                      "verdicts) (default $EDGEBENCH_TOKEN)")
    add_server_ca_option(gate)
    gate.add_argument("--influx-url", metavar="URL", help="judge the latest results in this InfluxDB (v1 API, "
                      "InfluxQL); verdicts are recorded there (measurement edgebench_gate)")
    gate.add_argument("--influx-db", default="edgebench", metavar="NAME", help="InfluxDB database (default edgebench)")
    gate.add_argument("--influx-username", help="InfluxDB user (password from $EDGEBENCH_INFLUX_PASSWORD)")
    gate.add_argument("--no-record", dest="record", action="store_false",
                      help="do not write the verdicts to InfluxDB (by default they go to --influx-url, else through "
                      "the --server collector)")
    gate.add_argument("--junit", metavar="FILE", help="JUnit XML: one testcase per rule x model x board class x "
                      "configuration")
    gate.add_argument("--markdown", metavar="FILE", help="a Markdown summary for a pull-request comment")
    gate.add_argument("--json", metavar="FILE", help="verdicts as JSON; - for stdout")
    gate.set_defaults(handler=run)


def _token(args: argparse.Namespace):
    import os

    return args.token or os.environ.get("EDGEBENCH_TOKEN")


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.server.gates import rules as gates

    check_outputs(args, "json", "junit", "markdown")
    check_url(args.server, "--server")
    check_url(args.influx_url, "--influx-url")
    rules = gates.load_rules(args.rules)
    if not (args.reports or args.server or args.influx_url):
        raise UsageError("give the results to judge: --reports FILE... (bench or variants JSON reports), --server "
                         "URL (the collector) or --influx-url URL --influx-db NAME")
    results = gates.load_reports(args.reports, gates.parse_selector(args.labels or "")) if args.reports else []
    influx = None
    if args.server or args.influx_url:
        import os

        from edgebench.server.gates import sources as gate_sources

        if args.influx_url:
            influx = gate_sources.Influx(args.influx_url, args.influx_db, args.influx_username,
                                         os.environ.get("EDGEBENCH_INFLUX_PASSWORD"))
            results += gate_sources.results_from_influx(influx, rules)
        if args.server:
            results += gate_sources.results_from_server(args.server, _token(args), args.server_ca)
    verdicts = gates.evaluate(rules, results)
    if args.junit:
        Path(args.junit).write_text(gates.junit_xml(verdicts))
    if args.markdown:
        Path(args.markdown).write_text(gates.markdown(verdicts))
    document = gates.document(verdicts)
    if (influx or args.server) and args.record:  # the verdict history (measurement edgebench_gate)
        try:
            if influx:
                gate_sources.record_to_influx(influx, document)
            else:
                gate_sources.record_to_server(args.server, document, _token(args), args.server_ca)
        except EdgebenchError as exc:
            print(f"edgebench: warning: verdicts not recorded: {exc}", file=sys.stderr)
    emit_json(document, args.json)
    if args.json != "-":
        print(gates.terminal(verdicts))
    return document["exit_code"]
