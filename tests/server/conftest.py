"""The registry's backends as fixtures: ``registries`` opens Registry instances on one store of the parametrized
backend (SQLite: one file; PostgreSQL: a database of its own, dropped at the end), as two collectors would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from edgebench.server.registry import Registry, open_registry

from ..pgdb import temporary_database

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def registries(request, tmp_path: Path) -> Iterator[Callable[[], Registry]]:
    """A function that opens another Registry on the same store; every one is closed at the end."""
    opened: list[Registry] = []
    with temporary_database() if request.param == "postgresql" else contextlib.nullcontext() as url:
        spec = url or str(tmp_path / "registry.sqlite3")

        def open_one() -> Registry:
            registry = open_registry(spec, tmp_path / "data")
            opened.append(registry)
            return registry

        yield open_one
        for registry in opened:
            registry.close()


@pytest.fixture
def registry(registries) -> Registry:
    return registries()


