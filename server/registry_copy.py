"""`edgebench server copy-registry --from SRC --to DST`: one registry's rows copied into another, e.g. a collector's
SQLite file into the PostgreSQL database that several collectors will share (docs/fleet.md, "From one collector to
several").

Both registries are opened as a collector opens them, so both are migrated to this version's schema first. Every
table the migrations create (``server/registry.py``: ``MIGRATIONS``; ``schema_version`` is each registry's own) is
copied with every column, ids, token hashes and the shared URL-signing key included, so tokens and signed model URLs
keep working. The source is read in batches in key order; the destination is written in ONE transaction, each row
inserted if its primary key is absent: either the whole copy lands or nothing does, and running it again copies
nothing new.

The conflict rule: a destination row under a source row's key with other values (a token of the same name made
since, a collector that already ran on the destination and moved its devices' last_seen) refuses the copy, exit 2,
and nothing is written, rather than one side silently winning. ``--on-conflict keep`` copies the rest and keeps the
destination's row: a top-up after collectors started on the destination while the old one still took results.
Destination rows whose keys the source lacks are left as they are. Model files are not rows: they stay in the
models directory, which the operator copies (the output says so).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgebench.agent.errors import EdgebenchError, UsageError, first_line

log = logging.getLogger(__name__)

BATCH = 500  # rows per read and per insert: a results row carries up to 10,000 latency samples (~150 KB)
PROGRESS_S = 5.0  # a table still being copied is logged this often
MODEL_FILES = ("model files are not in the registry: copy the models directory (--models-dir, default "
               "DATA_DIR/models) to the one every collector is given (docs/fleet.md)")
CONFLICT_RULES = ("refuse", "keep")
SPEC_HELP = "a SQLite file or postgresql://USER@HOST/DB (its password better in $PGPASSWORD or ~/.pgpass)"


@dataclass
class TableCount:
    copied: int = 0
    already_there: int = 0  # the same key, the same values
    differing: int = 0  # the same key, other values: a conflict (the destination's kept, or the copy refused)
    example: Optional[str] = None  # the key of one differing row, for the message


def tables() -> list[str]:
    """The registry's tables, in the order its migrations create them."""
    from edgebench.server.registry import MIGRATIONS

    found = [name for migration in MIGRATIONS
             for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", migration.sql, re.IGNORECASE)]
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- opening both ends

@contextmanager
def _blame(flag: str) -> Iterator[None]:
    """An error about a registry value, as a usage error (exit 2) that names the flag, in one line."""
    try:
        yield
    except EdgebenchError as exc:
        text = first_line(exc)  # backends word it for --registry: "--registry URL: why", "registry URL: why"
        raise UsageError(f"{flag} {text[len('--registry '):]}" if text.startswith("--registry ")
                         else f"{flag}: {text}") from None


def check_ends(source: str, destination: str, data_dir: Path) -> None:
    """Before anything is opened: a SQLite source that exists (opening one would make an empty file) and two
    different registries."""
    from edgebench.server.registry_backends import location, redact, scheme

    for flag, spec in (("--from", source), ("--to", destination)):
        if not spec.strip():
            raise UsageError(f"{flag}: expected {SPEC_HELP}")
    with _blame("--from"):
        where_from = location(source, data_dir)
    with _blame("--to"):
        where_to = location(destination, data_dir)
    if scheme(source) == "sqlite" and not Path(where_from).is_file():  # a SQLite location is the file's path
        raise UsageError(f"--from {source}: no such file (a collector's registry is DATA_DIR/registry.sqlite3)")
    if where_from == where_to:
        raise UsageError(f"--from {redact(source)} and --to {redact(destination)} are the same registry "
                         f"({redact(where_from)}): nothing to copy")


def _open(spec: str, flag: str, data_dir: Path) -> Any:
    """The store, migrated to this version's schema as a collector would migrate it."""
    from edgebench.server.registry import migrate
    from edgebench.server.registry_backends import open_store

    with _blame(flag):
        store = open_store(spec, data_dir)
        try:
            migrate(store)
        except BaseException:
            store.close()
            raise
    return store


def copy_registry(source: str, destination: str, on_conflict: str = "refuse") -> dict[str, TableCount]:
    """Copy every table of ``source`` into ``destination`` (``--registry`` values); the counts per table. A
    destination row that differs from the source's under the same key: ``refuse`` raises UsageError, having
    written nothing; ``keep`` leaves it and copies the rest."""
    if on_conflict not in CONFLICT_RULES:
        raise UsageError(f"--on-conflict {on_conflict}: expected one of {', '.join(CONFLICT_RULES)}")
    data_dir = Path.cwd()  # places only an empty value (DATA_DIR/registry.sqlite3), which check_ends refuses
    check_ends(source, destination, data_dir)
    with ExitStack() as stack:
        src = _open(source, "--from", data_dir)
        stack.callback(src.close)
        dst = _open(destination, "--to", data_dir)
        stack.callback(dst.close)
        log.info("copying %r into %r", src, dst)
        return _copy(src, dst, refuse=on_conflict == "refuse")


# ---------------------------------------------------------------- the copy

def _copy(src: Any, dst: Any, refuse: bool) -> dict[str, TableCount]:
    counts: dict[str, TableCount] = {}
    with dst.transaction() as tx:
        for table in tables():
            counts[table] = _copy_table(src, dst, tx, table)
        if refuse and any(count.differing for count in counts.values()):
            raise UsageError(_refusal(counts))  # leaving the transaction by an exception rolls it back
    return counts


def _key(store: Any, table: str) -> str:
    key = [row["name"] for row in store.rows(store.KEY_SQL, (table,))]
    if len(key) != 1:  # every table of the registry has one; a new one without must say how to copy it
        raise EdgebenchError(f"copy-registry: table {table} has no one-column primary key ({key}); cannot copy it")
    return key[0]


def _copy_table(src: Any, dst: Any, tx: Any, table: str) -> TableCount:
    """The source's rows, a batch at a time, inserted where the destination lacks their key; the rest compared."""
    key = _key(src, table)
    columns = [row["name"] for row in src.rows(src.COLUMNS_SQL, (table,))]
    missing = set(columns) - {row["name"] for row in tx.rows(dst.COLUMNS_SQL, (table,))}
    if missing:  # both were migrated to one schema: only a column added by hand gets here
        raise UsageError(f"--to: table {table} lacks the source's columns {', '.join(sorted(missing))}")
    listed = ", ".join(columns)
    insert = (f"INSERT INTO {table} ({listed}) VALUES ({', '.join('?' * len(columns))}) "
              f"ON CONFLICT ({key}) DO NOTHING")  # a collector writing meanwhile keeps its row
    total = src.rows(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
    log.info("%s: %d rows", table, total)
    count, done, logged = TableCount(), 0, time.monotonic()
    for batch in _batches(src, table, listed, key):
        keys = tuple(row[key] for row in batch)
        present = {row[key]: row for row in tx.rows(
            f"SELECT {listed} FROM {table} WHERE {key} IN ({', '.join('?' * len(keys))})", keys)}
        new = [tuple(row[c] for c in columns) for row in batch if row[key] not in present]
        tx.run_many(insert, new)
        count.copied += len(new)
        for row in batch:
            there = present.get(row[key])
            if there is not None:
                _compare(count, row, there, columns, key)
        done += len(batch)
        if time.monotonic() - logged >= PROGRESS_S:
            log.info("%s: %d of %d rows read", table, done, total)
            logged = time.monotonic()
    dst.after_copy(tx, table)
    log.info("%s: %d copied, %d already there, %d differing", table, count.copied, count.already_there,
             count.differing)
    return count


def _batches(store: Any, table: str, listed: str, key: str) -> Iterator[list[dict]]:
    """The table's rows in key order, BATCH at a time: each read starts after the last key (no OFFSET, which
    reads every row it skips), in a call of its own, so a live source is never locked for the whole copy."""
    rows = store.rows(f"SELECT {listed} FROM {table} ORDER BY {key} LIMIT {BATCH}")
    while rows:
        yield rows
        rows = store.rows(f"SELECT {listed} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT {BATCH}",
                          (rows[-1][key],))


def _compare(count: TableCount, row: dict, there: dict, columns: list[str], key: str) -> None:
    """Values as each driver returns them compare equal across backends (str, int, float: both 8-byte doubles,
    bytes)."""
    if all(row[c] == there[c] for c in columns):
        count.already_there += 1
    else:
        count.differing += 1
        count.example = count.example or str(row[key])[:40]


def _refusal(counts: dict[str, TableCount]) -> str:
    found = "; ".join(f"{count.differing} in {table} (e.g. {count.example!r})"
                      for table, count in counts.items() if count.differing)
    return (f"the destination already holds rows that differ from the source's under the same key: {found}. "
            "Nothing was copied: copy into a new, empty database, delete those rows from the destination, or keep "
            "them and copy the rest with --on-conflict keep")


# ---------------------------------------------------------------- the command

def register(commands) -> None:
    """`edgebench server copy-registry`, under `edgebench server` (server/cli.py). One word, not `registry copy`: a
    config file's ``[server] registry = ...`` and a ``[server.registry.copy]`` table cannot both be TOML."""
    copy = commands.add_parser(
        "copy-registry", help="copy every row of one registry into another (SQLite into PostgreSQL): --from SRC "
        "--to DST",
        description="Copy devices, models, jobs, results, delivered msg ids, dead letters, API tokens and the "
        "collectors' shared secrets from one registry into another (both migrated first), keeping ids, so tokens "
        "and signed model URLs keep working. Run it with the source's collector stopped. Rows already there "
        "are skipped, so running it again copies nothing new; a destination row that differs from the source's "
        "under the same key refuses the copy (exit 2) and nothing is written, unless --on-conflict keep. Model "
        "files are not in the registry: copy the models directory yourself. See docs/fleet.md.")
    copy.add_argument("--from", dest="source", required=True, metavar="FILE|URL",
                      help=f"the registry to copy: {SPEC_HELP}")
    copy.add_argument("--to", dest="destination", required=True, metavar="FILE|URL",
                      help=f"the registry to copy into: {SPEC_HELP}")
    copy.add_argument("--on-conflict", choices=CONFLICT_RULES, default="refuse",
                      help="a destination row that differs from the source's under the same key (a collector ran "
                      "on the destination): refuse the whole copy, writing nothing (default), or keep the "
                      "destination's row and copy the rest")
    copy.add_argument("--json", metavar="FILE", help="write the counts per table as JSON; - for stdout")
    copy.set_defaults(handler=run)


def run(args) -> int:
    from edgebench.agent.engine.report import check_writable, emit_json

    if args.json and args.json != "-":
        check_writable(args.json, "--json")  # before the copy, not after it
    counts = copy_registry(args.source, args.destination, on_conflict=args.on_conflict)
    document = summary(args.source, args.destination, counts)
    emit_json(document, args.json)
    if args.json != "-":
        print(render(document))
    return 0


def summary(source: str, destination: str, counts: dict[str, TableCount]) -> dict:
    from edgebench.server.registry_backends import redact

    fields = ("copied", "already_there", "differing")
    per_table = {table: {name: getattr(count, name) for name in fields} for table, count in counts.items()}
    totals = {name: sum(count[name] for count in per_table.values()) for name in fields}
    return {"from": redact(source), "to": redact(destination), "tables": per_table, **totals,
            "model_files": MODEL_FILES}


def render(document: dict) -> str:
    """The counts as a table; ``differing``: the destination's row kept (--on-conflict keep)."""
    rows = [("table", "copied", "already there", "differing"),
            *((table, c["copied"], c["already_there"], c["differing"]) for table, c in document["tables"].items()),
            ("total", document["copied"], document["already_there"], document["differing"])]
    lines = [f"copied {document['from']} -> {document['to']}"]
    lines += [f"{name:14} {copied:>8} {there:>14} {differing:>10}" for name, copied, there, differing in rows]
    return "\n".join([*lines, document["model_files"]])
