"""The command line: `edgebench COMMAND`. The dispatcher and the bench-side commands live here; each command module
turns arguments into the settings objects the engine, the optimisation room or the fleet take (argparse goes no
deeper than this package)."""

from edgebench.agent.cli.main import main

__all__ = ["main"]
