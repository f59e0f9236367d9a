"""edgebench agent: the single-board measurement engine and (later) the fleet daemon.

Importing this package must stay cheap: ``edgebench --help`` imports no numpy and no runtime.
"""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("edgebench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
