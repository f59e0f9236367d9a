"""Content-addressed model cache: ``DATA_DIR/models/<sha256>``, verified before use, LRU-evicted under a quota.

A file's name is its sha256 (64 hex digits, checked against a strict pattern), never a name from a job, so nothing
a job says can make a path outside the cache directory. Downloads go to ``<sha256>.part`` and resume with an HTTP
Range request; the file is hashed before it is renamed into place. A file whose content does not match its name
(truncated, corrupted, wrong) is refused and deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from ..errors import ModelError
from .protocol import SHA256

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelCache:
    def __init__(self, root: Path, quota_bytes: int = 2 * 1024**3):
        self.root = root
        self.quota_bytes = quota_bytes
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not SHA256.match(sha256):
            raise ModelError(f"model id {str(sha256)[:80]!r} is not a sha256 digest")
        path = (self.root / sha256).resolve()
        if path.parent != self.root.resolve():  # belt and braces: the pattern already excludes separators
            raise ModelError(f"model path {path} escapes the cache directory")
        return path

    def get(self, sha256: str, size: Optional[int], url: str, timeout_s: float = 60.0) -> Path:
        """The verified model file, fetched if absent; raises ModelError on a mismatch or a failed download.
        ``size`` None (a job's reference model is named by its sha256 only): the download is bounded by the quota
        and the sha256 alone verifies it."""
        path = self.path_for(sha256)
        if path.exists():
            if (size is None or path.stat().st_size == size) and file_sha256(path) == sha256:
                os.utime(path)  # LRU: last use is the file's mtime
                return path
            log.warning("cached model %s is corrupt: fetching it again", sha256[:12])
            path.unlink()
        self.evict(reserve=size or 0)
        if size is None:
            path.with_name(sha256 + ".part").unlink(missing_ok=True)  # no size to resume against
        self._download(url, path.with_name(sha256 + ".part"), size, timeout_s)
        part = path.with_name(sha256 + ".part")
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink()
            raise ModelError(f"model {sha256[:12]} from {url}: content has sha256 {actual[:12]}, refused")
        os.replace(part, path)
        return path

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
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
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
        except (urllib.error.URLError, OSError) as exc:
            raise ModelError(f"cannot fetch model from {url}: {exc}") from None
        if bounded and part.stat().st_size != size:
            raise ModelError(f"model from {url} is truncated: {part.stat().st_size} of {size} bytes (resumable)")

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
