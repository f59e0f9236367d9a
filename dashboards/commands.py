"""Registers ``edgebench dashboards build | push | queries``. Standard library only at import time (``edgebench
--help`` stays cheap on a board); grafanalib is imported by the handlers that render dashboards."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(commands) -> None:
    dashboards = commands.add_parser(
        "dashboards", help="build the Grafana dashboards or upload them to Grafana",
        description="The Grafana dashboards (fleet overview, model comparison, device detail, release gates) are "
        "Python code (grafanalib) rendered to JSON; every query is InfluxQL. See docs/dashboards.md.")
    sub = dashboards.add_subparsers(dest="dashboards_command", metavar="COMMAND", required=True)

    build = sub.add_parser("build", help="render the dashboards to JSON (default: the committed dashboards/json/)")
    build.add_argument("--out", metavar="DIR", help="write the JSON files here instead")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if the JSON in --out (or the committed JSON) is stale")
    build.set_defaults(handler=cmd_build)

    push = sub.add_parser("push", help="upload the dashboards through Grafana's HTTP API (overwriting by uid)")
    push.add_argument("--grafana-url", required=True, metavar="URL", help="e.g. http://grafana.lab:3000")
    push.add_argument("--token", metavar="TOKEN",
                      help="a Grafana service account token with dashboard write access (or $GRAFANA_TOKEN)")
    push.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    push.add_argument("--folder-uid", metavar="UID", help="put the dashboards in this folder (default: General)")
    push.add_argument("--from", dest="from_dir", metavar="DIR",
                      help="upload the JSON files in DIR instead of rendering the dashboards from code")
    push.set_defaults(handler=cmd_push)

    queries = sub.add_parser("queries", help="print every panel's InfluxQL")
    queries.set_defaults(handler=cmd_queries)


def _token(args: argparse.Namespace) -> str:
    from edgebench.agent.errors import UsageError

    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file}: {exc.strerror}") from None
    token = args.token or os.environ.get("GRAFANA_TOKEN", "")
    if not token:
        raise UsageError("give a Grafana token: --token, --token-file or $GRAFANA_TOKEN")
    return token


def cmd_build(args: argparse.Namespace) -> int:
    from edgebench.dashboards.build import JSON_DIR, build, stale

    out = Path(args.out) if args.out else JSON_DIR
    if args.check:
        changed = stale(out)
        for name in changed:
            print(f"stale: {out / name} (run: edgebench dashboards build)", file=sys.stderr)
        return 1 if changed else 0
    for path in build(out):
        print(path)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from edgebench.agent.errors import EdgebenchError
    from edgebench.dashboards.push import PushError, push_dashboard

    token = _token(args)
    if args.from_dir:
        from edgebench.dashboards.build import load

        dashboards = load(Path(args.from_dir))
        if not dashboards:
            raise EdgebenchError(f"no dashboard JSON files in {args.from_dir}")
    else:
        from edgebench.dashboards.build import DASHBOARDS, render

        dashboards = {name: render(name) for name in DASHBOARDS}
    for name, data in dashboards.items():
        try:
            answer = push_dashboard(args.grafana_url, token, data, args.folder_uid)
        except PushError as exc:
            raise EdgebenchError(str(exc)) from None
        url = answer.get("url", "")
        print(f"{name}: {answer.get('status', 'success')} version {answer.get('version', '?')} "
              f"{args.grafana_url.rstrip('/')}{url}")
    return 0


def cmd_queries(args: argparse.Namespace) -> int:
    from edgebench.dashboards.build import DASHBOARDS, render
    from edgebench.dashboards.queries import panel_queries, query_variables

    for name in DASHBOARDS:
        data = render(name)
        print(f"# {data['title']} ({data['uid']})")
        for variable in query_variables(data):
            print(f"${variable['name']}: {variable['query']}")
        for query in panel_queries(data):
            print(f"[{query.panel} / {query.ref}] {query.text}")
        print()
    return 0
