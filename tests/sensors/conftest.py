"""Fixtures for the sensor tests: the recorded board trees and helpers to read them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest

from edgebench.agent import sensors
from edgebench.agent.sensors import Reading

BOARDS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "boards"
BOARDS = ["rpi4", "rpi5", "jetson-orin-nano", "jetson-xavier-nx", "android-phone", "x86-rapl"]


def read_board(root) -> Dict[str, Reading]:
    """reading id -> Reading for every sensor the tree offers."""
    found = sensors.discover(root)
    try:
        return {r.sensor: r for r in sensors.read_all(found)}
    finally:
        sensors.close_all(found)


@pytest.fixture
def board_copy(tmp_path):
    """A writable copy of a recorded board, to break on purpose."""

    def make(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(BOARDS_DIR / name, dest)
        return dest

    return make
