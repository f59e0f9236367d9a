"""PostgreSQL databases for tests: each made with a random name on the machine's server (127.0.0.1:5432, trust
auth, user postgres: every machine of this kind runs it, CI's too) and dropped at the end.
``$EDGEBENCH_TEST_POSTGRES`` names another server (a URL of its maintenance database)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

SERVER = os.environ.get("EDGEBENCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def temporary_database(prefix: str = "edgebench_test") -> Iterator[str]:
    """The URL of a new, empty database; dropped afterwards (connections still open to it are ended first)."""
    import psycopg

    base, _, _ = SERVER.rpartition("/")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
