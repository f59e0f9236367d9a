"""The JSON Schema of a Grafana dashboard, generated from Grafana's own published types (npm ``@grafana/schema``)
with ``ts-json-schema-generator``: no Grafana server can run here, so this is the strongest check of the JSON.

The npm packages are installed once, at pinned versions, into ``$EDGEBENCH_CACHE/grafana-schema/<versions>/``
(default ``~/.cache/edgebench``) and the schema is generated there once; later runs reuse the file. Run this file
to prepare the cache ahead of time (``python tests/dashboards/grafana_schema.py`` prints the schema's path).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Pinned (docs/dashboards.md): @grafana/schema 13.2.3 is Grafana 13.2's dashboard model (schemaVersion 42).
PACKAGES = {"@grafana/schema": "13.2.3", "ts-json-schema-generator": "2.4.0", "typescript": "5.9.3"}
TYPES = "node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts"
SCHEMA_FILE = "dashboard.schema.json"


class SchemaUnavailable(RuntimeError):
    """npm is missing or the install/generation failed."""


def cache_dir() -> Path:
    base = Path(os.environ.get("EDGEBENCH_CACHE", "~/.cache/edgebench")).expanduser()
    key = hashlib.sha256(json.dumps(PACKAGES, sort_keys=True).encode()).hexdigest()[:12]
    return base / "grafana-schema" / key


def _run(argv: list[str], cwd: Path, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SchemaUnavailable(f"{' '.join(argv[:3])}: {exc}") from None
    if proc.returncode != 0:
        raise SchemaUnavailable(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def schema_path() -> Path:
    """The generated schema file, installing and generating on first use (under a lock: one run at a time)."""
    folder = cache_dir()
    schema = folder / SCHEMA_FILE
    if schema.is_file():
        return schema
    npm = shutil.which("npm")
    if not npm:
        raise SchemaUnavailable("npm is not installed (Node.js 18+ with npm is needed to fetch @grafana/schema)")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if schema.is_file():
            return schema
        (folder / "package.json").write_text(json.dumps(
            {"name": "edgebench-grafana-schema", "private": True, "dependencies": PACKAGES}, indent=2) + "\n")
        _run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], folder, 600)
        generator = folder / "node_modules" / ".bin" / "ts-json-schema-generator"
        partial = folder / (SCHEMA_FILE + ".part")
        _run([str(generator), "--path", TYPES, "--type", "Dashboard", "-o", str(partial)], folder, 300)
        json.loads(partial.read_text())  # a truncated file must not be cached
        partial.replace(schema)
    return schema


def load_schema() -> dict:
    return json.loads(schema_path().read_text())


if __name__ == "__main__":
    try:
        print(schema_path())
    except SchemaUnavailable as exc:
        print(f"grafana_schema: {exc}", file=sys.stderr)
        sys.exit(1)
