"""Where sensor files are read from: a local tree (``/`` or a recorded fixture) or a device over a runner.

Plugins name files by their path on the board ("/sys/class/thermal/thermal_zone0/temp"); an FS maps that
path onto the machine that holds it. ``LocalFS("/")`` is the machine we run on (``live``); ``LocalFS(dir)``
is a recorded tree; ``RemoteFS(runner)`` reads through ``cat`` over adb, batching many files per round trip.
"""

from __future__ import annotations

import errno
import glob as globmod
import os
import re
import shlex
from typing import TYPE_CHECKING, Dict, Iterable, List, Sequence, Union

if TYPE_CHECKING:
    from edgebench.agent.sensors.commands import CommandRunner

ReadResult = Union[str, OSError]


def natural_key(text: str) -> list:
    """thermal_zone2 before thermal_zone10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class FS:
    live = False  # True only for the real root of the machine this process runs on

    def read_text(self, path: str) -> str:
        raise NotImplementedError

    def read_many(self, paths: Sequence[str]) -> Dict[str, ReadResult]:
        out: Dict[str, ReadResult] = {}
        for path in paths:
            try:
                out[path] = self.read_text(path)
            except OSError as exc:
                out[path] = exc
        return out

    def glob(self, pattern: str) -> List[str]:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        return bool(self.glob(path))

    def source(self, path: str) -> str:
        """How a reading's source is written in records."""
        return path


class LocalFS(FS):
    def __init__(self, root: Union[str, os.PathLike] = "/"):
        self.root = os.path.abspath(os.fspath(root))
        self.live = self.root == "/"
        self._prefix = "" if self.live else self.root

    def __repr__(self) -> str:
        return f"LocalFS({self.root!r})"

    def host(self, path: str) -> str:
        return self._prefix + path

    def read_text(self, path: str) -> str:
        # errors="replace": a driver that returns binary garbage is reported as a garbage value, not a crash
        with open(self.host(path), encoding="utf-8", errors="replace") as f:
            return f.read()

    def glob(self, pattern: str) -> List[str]:
        found = globmod.glob(self.host(pattern))
        return sorted((p[len(self._prefix):] for p in found), key=natural_key)

    def exists(self, path: str) -> bool:
        return os.path.exists(self.host(path))

    def source(self, path: str) -> str:
        return path if self.live else f"{self.root}:{path}"


# Old adb servers and devices cap a shell command at 4 KB: batches stay under that.
MAX_COMMAND_CHARS = 3000
_MARK = "<<<edgebench-file>>>"
_FAIL = "<<<edgebench-unreadable>>>"
# One shell round trip for many files: a marker line with the path, then the contents or a failure mark.
_BATCH = f'for f in "$@"; do echo "{_MARK} $f"; cat "$f" 2>/dev/null || echo "{_FAIL}"; done'


def _chunks(paths: Sequence[str], max_chars: int) -> Iterable[List[str]]:
    chunk: List[str] = []
    size = 0
    for path in paths:
        if chunk and size + len(path) + 3 > max_chars:
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += len(path) + 3  # quotes and a space once quoted for the device shell
    if chunk:
        yield chunk


class RemoteFS(FS):
    """Files on a device, read with ``cat`` through a command runner (adb). Globs expand on the device."""

    def __init__(self, runner: CommandRunner, timeout: float = 10.0):
        self.runner = runner
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RemoteFS({self.runner!r})"

    def read_text(self, path: str) -> str:
        result = self.read_many([path])[path]
        if isinstance(result, OSError):
            raise result
        return result

    def read_many(self, paths: Sequence[str]) -> Dict[str, ReadResult]:
        results: Dict[str, ReadResult] = {}
        for chunk in _chunks(paths, MAX_COMMAND_CHARS):
            results.update(self._read_batch(chunk))
        return results

    def _read_batch(self, paths: Sequence[str]) -> Dict[str, ReadResult]:
        out = self.runner.run(["sh", "-c", _BATCH, "sh", *paths], self.timeout)
        unreadable = OSError(errno.EIO, "unreadable on the device")
        results: Dict[str, ReadResult] = dict.fromkeys(paths, unreadable)
        if out is None:
            return results
        for part in out.split(_MARK + " ")[1:]:
            path, _, body = part.partition("\n")
            if path in results and body.strip() != _FAIL:
                results[path] = body
        return results

    def glob(self, pattern: str) -> List[str]:
        # The pattern comes from plugin code, never from a device: it is left unquoted so the device expands it.
        out = self.runner.run(["sh", "-c", f"ls -d {pattern} 2>/dev/null"], self.timeout)
        if not out:
            return []
        return sorted((line.strip() for line in out.splitlines() if line.strip()), key=natural_key)

    def exists(self, path: str) -> bool:
        out = self.runner.run(["sh", "-c", f"[ -e {shlex.quote(path)} ] && echo yes"], self.timeout)
        return bool(out and out.strip() == "yes")

    def source(self, path: str) -> str:
        return f"{self.runner.prefix}{path}"


def make_fs(root: Union[str, os.PathLike, FS] = "/") -> FS:
    return root if isinstance(root, FS) else LocalFS(root)


def first_existing(fs: FS, paths: Iterable[str]) -> Union[str, None]:
    for path in paths:
        if fs.exists(path):
            return path
    return None
