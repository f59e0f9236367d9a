"""The command line: `edgebench COMMAND`. One module per command (bench, compare, variants, sensors, agent, push
with devices and jobs), the argument types and shared option groups (args), config-file and environment defaults
(config), and the dispatcher (main). Each command module turns arguments into the settings objects the engine,
the optimisation room or the fleet take: argparse goes no deeper than this package."""

from edgebench.agent.cli.main import main

__all__ = ["main"]
