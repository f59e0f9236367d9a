"""Fixtures for the native harness tests: the built binaries (skip only when they are not built)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.agent.engine.executors.native import find_binary

SKIP_REASON = "the native harness is not built: run `make native` (make test builds it)"


@pytest.fixture(scope="session")
def native_bin() -> Path:
    binary = find_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    return binary


@pytest.fixture(scope="session")
def bare_bin(native_bin: Path) -> Path:
    bare = native_bin.parent / "edgebench-native-bare"
    if not bare.exists():
        pytest.skip(f"{bare} is not built: run `make native`")
    return bare
