"""Render the dashboards to Grafana JSON (the committed files under dashboards/json/ are this output)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

# file name (without .json) -> module that builds it
DASHBOARDS: dict[str, str] = {
    "fleet-overview": "fleet",
    "model-comparison": "models",
    "device-detail": "device",
    "release-gates": "gates",
}
JSON_DIR = Path(__file__).resolve().parent / "json"


def render(name: str) -> dict:
    from edgebench.dashboards.common import to_json

    module = importlib.import_module(f".{DASHBOARDS[name]}", __package__)
    return to_json(module.build())


def dumps(data: dict) -> str:
    """Stable text: sorted keys, two-space indent, a final newline (what is committed)."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build(out_dir: Path = JSON_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DASHBOARDS:
        path = out_dir / f"{name}.json"
        text = dumps(render(name))
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def stale(json_dir: Path = JSON_DIR) -> list[str]:
    """The committed files that differ from what the code renders now (or are missing)."""
    out = []
    for name in DASHBOARDS:
        path = json_dir / f"{name}.json"
        if not path.exists() or path.read_text() != dumps(render(name)):
            out.append(path.name)
    return out


def load(json_dir: Path) -> dict[str, dict]:
    """Dashboards from a folder of JSON files (what ``push --from`` uploads), by file stem."""
    files = sorted(json_dir.glob("*.json"))
    return {path.stem: json.loads(path.read_text()) for path in files}
