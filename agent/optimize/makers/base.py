"""What every variant maker shares: the Variant row, making one variant so that its failure is a row and not the end,
and native output kept off the terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from edgebench.agent.errors import EdgebenchError, first_line

log = logging.getLogger(__name__)


@dataclass
class Variant:
    name: str
    path: Optional[Path] = None
    error: Optional[str] = None
    report: Optional[dict] = None
    drift: Optional[dict] = None
    speedup: Optional[dict] = None  # p50 speed-up against the float model, with its interval
    speedup_p90: Optional[dict] = None  # the same for p90 (what the recommendation quotes)
    notes: list = field(default_factory=list)
    accuracy: Optional[dict] = None  # with --eval: top1, top5, samples on the labelled set
    known_size: Optional[int] = None  # the file's size where there is no file here (a fleet job's model)
    compressed_bytes: Optional[int] = None  # zlib level 6 of the file (with --prune: what pruning buys)

    @property
    def size_bytes(self) -> Optional[int]:
        return self.path.stat().st_size if self.path and self.path.exists() else self.known_size

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path) if self.path else None, "size_bytes": self.size_bytes,
                "error": self.error, "notes": self.notes, "drift": self.drift, "speedup": self.speedup,
                "speedup_p90": self.speedup_p90,
                "compressed_bytes": self.compressed_bytes, "accuracy": self.accuracy, "report": self.report}


def produce(kind: str, maker: Callable[[], list[str]], target: Path, quiet) -> Variant:
    """Make one variant with ``maker`` (its notes), the libraries kept ``quiet``; a quantizer's failure becomes the
    row's error ("could not be produced: ..."), an edgebench error (bad calibration data) stops the command."""
    variant = Variant(kind, target)
    try:
        with quiet():
            variant.notes = maker()
    except EdgebenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed variant is a row in the table, not the end
        variant.error = f"could not be produced: {first_line(exc)}"
        variant.path = None
    return variant


@contextmanager
def captured_stderr() -> Iterator[None]:
    """Send what native code writes to stderr (a runtime's C++ log lines) to the log at debug level instead of the
    user's terminal: file descriptor 2 itself is redirected, which ``contextlib.redirect_stderr`` cannot do."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                log.debug("native output: %s", text)


@contextmanager
def quiet_library(name: str) -> Iterator[None]:
    """A quantizer or exporter's printing, Python warnings and native stderr lines, kept out of the output (sent to the
    log at debug level, under ``name``) unless --debug asks for everything."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), captured_stderr(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        if printed.getvalue().strip():
            log.debug("%s: %s", name, printed.getvalue().strip())
