"""Content-addressed model cache: ``DATA_DIR/models/<sha256>``, verified before use, LRU-evicted under a quota.

A file's name is its sha256 (64 hex digits, checked against a strict pattern), never a name from a job, so nothing
a job says can make a path outside the cache directory. Downloads go to ``<sha256>.part`` and resume with an HTTP
Range request, or from the collector in model-chunk messages over MQTT (resuming from the partial file's size,
docs/protocol.md); the file is hashed before it is renamed into place. A file whose content does not match its name
(truncated, corrupted, wrong) is refused and deleted.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from edgebench.agent.errors import ModelError
from edgebench.agent.fleet import protocol
from edgebench.agent.fleet.protocol import MODEL_WINDOW_BYTES, SHA256
from edgebench.agent.tls import client_context, unverified

log = logging.getLogger(__name__)
CHUNK = 1 << 20
CHUNK_RETRIES = 5  # model-request windows re-sent without an answer before a transfer over MQTT gives up


class Unreachable(ModelError):
    """The HTTP model source could not be reached (connection refused, no route, timeout): try MQTT."""


class ChunkSource:
    """Model chunks over MQTT: ``request(sha256, offset, length)`` publishes a model-request; the agent's MQTT
    thread puts each validated model-chunk payload for the transfer under way into ``inbox``."""

    def __init__(self, request: Callable[[str, int, int], None], window: int = MODEL_WINDOW_BYTES):
        self.request, self.window = request, window
        self.inbox: queue.Queue = queue.Queue()
        self.wanted: Optional[str] = None  # the sha256 being transferred (chunks of others are dropped)

    def offer(self, payload: dict) -> None:
        if payload.get("sha256") == self.wanted:
            self.inbox.put(payload)


def fetch_chunks(part: Path, sha256: str, size: Optional[int], quota: int, source: ChunkSource,
                 timeout_s: float, retries: int = CHUNK_RETRIES) -> None:
    """Fill ``part`` over MQTT, window by window, resuming from its current size; each window is asked for again
    when ``timeout_s`` passes without a chunk, at most ``retries`` times in a row. The caller verifies the sha256."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    total = size
    if total is not None and have == total:
        return
    source.wanted = sha256
    while not source.inbox.empty():  # chunks of an earlier, abandoned transfer
        source.inbox.get_nowait()
    failures = 0
    try:
        with open(part, "ab") as out:
            while total is None or have < total:
                end = have + (source.window if total is None else min(source.window, total - have))
                source.request(sha256, have, end - have)
                deadline = time.monotonic() + timeout_s
                progressed = False
                while have < end:
                    try:
                        chunk = source.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if chunk.get("error"):
                        raise ModelError(f"model {sha256[:12]} over MQTT: the collector says: {chunk['error']}")
                    if total is None:
                        total = int(chunk["total"])
                        if total > quota:
                            raise ModelError(f"model {sha256[:12]} over MQTT is larger than the cache quota of "
                                             f"{quota} bytes")
                        end = min(end, total)
                    elif chunk["total"] != total:
                        raise ModelError(f"model {sha256[:12]} over MQTT: the collector has {chunk['total']} bytes, "
                                         f"the job announced {total}")
                    if chunk["offset"] != have:
                        continue  # a duplicate, or the answer to an earlier request: not the next bytes
                    data = protocol.chunk_data(chunk)
                    out.write(data)
                    out.flush()
                    have += len(data)
                    progressed = True
                    deadline = time.monotonic() + timeout_s
                failures = 0 if progressed else failures + 1
                if failures > retries:
                    raise ModelError(f"model {sha256[:12]} over MQTT: no answer in {timeout_s:g}s, {retries + 1} "
                                     f"times; {have} of {total or '?'} bytes kept (resumable)")
    finally:
        source.wanted = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelCache:
    def __init__(self, root: Path, quota_bytes: int = 2 * 1024**3, ca_file: Optional[str] = None):
        """``ca_file``: the CA that verifies an https:// collector (the agent's ``--tls-ca``, the broker's CA too);
        None: the system's store."""
        self.root = root
        self.quota_bytes = quota_bytes
        self.tls = client_context(ca_file, "--tls-ca")
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not SHA256.match(sha256):
            raise ModelError(f"model id {str(sha256)[:80]!r} is not a sha256 digest")
        path = (self.root / sha256).resolve()
        if path.parent != self.root.resolve():  # belt and braces: the pattern already excludes separators
            raise ModelError(f"model path {path} escapes the cache directory")
        return path

    def get(self, sha256: str, size: Optional[int], url: Optional[str], timeout_s: float = 60.0,
            chunks: Optional[ChunkSource] = None, transport: str = "auto", chunk_timeout_s: float = 30.0) -> Path:
        """The verified model file, fetched if absent; raises ModelError on a mismatch or a failed download.
        ``size`` None (a job's reference model is named by its sha256 only): the download is bounded by the quota
        and the sha256 alone verifies it. ``transport``: ``http`` (``url``), ``mqtt`` (``chunks``), or ``auto``:
        HTTP, then MQTT chunks when there is no URL or the collector's HTTP cannot be reached."""
        path = self.path_for(sha256)
        if path.exists():
            if (size is None or path.stat().st_size == size) and file_sha256(path) == sha256:
                os.utime(path)  # LRU: last use is the file's mtime
                return path
            log.warning("cached model %s is corrupt: fetching it again", sha256[:12])
            path.unlink()
        self.evict(reserve=size or 0)
        part = path.with_name(sha256 + ".part")
        if size is None:
            part.unlink(missing_ok=True)  # no size to resume against
        source = self._fetch(sha256, part, size, url, timeout_s, chunks, transport, chunk_timeout_s)
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink()
            raise ModelError(f"model {sha256[:12]} {source}: content has sha256 {actual[:12]}, refused")
        os.replace(part, path)
        return path

    def _fetch(self, sha256: str, part: Path, size: Optional[int], url: Optional[str], timeout_s: float,
               chunks: Optional[ChunkSource], transport: str, chunk_timeout_s: float) -> str:
        """Fill ``part``; returns where it came from (for messages)."""
        if transport not in ("auto", "http", "mqtt"):
            raise ModelError(f"unknown model transport {transport!r}")
        if transport != "mqtt" and url:
            try:
                self._download(url, part, size, timeout_s)
                return f"from {url.split('?')[0]}"  # not the signature
            except Unreachable as exc:
                if transport == "http" or chunks is None:
                    raise
                log.warning("%s: fetching model %s over MQTT instead", exc, sha256[:12])
        if transport == "http" or chunks is None:
            raise ModelError(f"model {sha256[:12]}: no download URL" + (
                "" if transport == "http" else " and no MQTT model transport"))
        fetch_chunks(part, sha256, size, self.quota_bytes, chunks, chunk_timeout_s)
        return "over MQTT"

    def _download(self, url: str, part: Path, size: Optional[int], timeout_s: float) -> None:
        bounded = size is not None
        size = size if size is not None else self.quota_bytes
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if bounded and have == size:
            return
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s, context=self.tls) as response:
                if have and response.status != 206:  # the server ignored the range: start over
                    have = 0
                with open(part, "ab" if have else "wb") as out:
                    written = have
                    for block in iter(lambda: response.read(CHUNK), b""):
                        written += len(block)
                        if written > size:
                            raise ModelError(f"model from {url} is larger than the "
                                             f"{'announced' if bounded else 'cache quota of'} {size} bytes")
                        out.write(block)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):  # the job's signed URL expired (or a collector without it): MQTT needs none
                raise Unreachable(f"cannot fetch model from {url.split('?')[0]}: {exc}") from None
            raise ModelError(f"cannot fetch model from {url}: {exc}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out: MQTT may still work
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk, not the network: the agent says so
                raise
            why = unverified(getattr(exc, "reason", exc), "--tls-ca FILE") or exc
            raise Unreachable(f"cannot fetch model from {url.split('?')[0]}: {why}") from None
        except ValueError as exc:  # not a URL urllib can open
            raise ModelError(f"cannot fetch model from {url}: {exc}") from None
        if bounded and part.stat().st_size != size:
            raise ModelError(f"model from {url} is truncated: {part.stat().st_size} of {size} bytes (resumable)")

    def shed(self, enough: Callable[[], bool], keep: set = frozenset()) -> list[str]:
        """The disk is short of space: delete least recently used models (not those in ``keep``) until
        ``enough()``; they are fetched again when a job needs them."""
        files = sorted((p for p in self.root.iterdir() if SHA256.match(p.name) and p.name not in keep),
                       key=lambda p: p.stat().st_mtime)
        shed = []
        for path in files:
            if enough():
                break
            path.unlink(missing_ok=True)
            shed.append(path.name)
        if shed:
            log.info("deleted %d cached model(s): the disk is short of space", len(shed))
        return shed

    def evict(self, reserve: int = 0) -> list[str]:
        """Delete least recently used models until the cache plus ``reserve`` bytes fits the quota."""
        files = sorted((p for p in self.root.iterdir() if SHA256.match(p.name)), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files) + reserve
        evicted = []
        for path in files:
            if total <= self.quota_bytes:
                break
            total -= path.stat().st_size
            path.unlink()
            evicted.append(path.name)
        if evicted:
            log.info("evicted %d model(s) to stay under the %d byte quota", len(evicted), self.quota_bytes)
        return evicted
