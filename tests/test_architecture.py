"""The house's rules (docs/architecture.md), read from the code's own imports: no import cycle, argparse only in
command-line modules, and each room imports only the rooms below it. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGES = {"edgebench.agent": REPO / "agent", "edgebench.server": REPO / "server",
            "edgebench.dashboards": REPO / "dashboards"}
# room -> the modules or packages it may import (besides its own room). Longest prefix names a module's room.
# "edgebench.agent" alone is the package's face (__version__), not everything under it.
BASE = ("edgebench.agent.errors", "edgebench.agent.tensors", "edgebench.agent.modelfile", "edgebench.agent.tls",
        "edgebench.agent")
RULES = {
    "edgebench.agent.sensors": BASE,
    "edgebench.agent.runtimes": BASE,
    "edgebench.agent.engine": (*BASE, "edgebench.agent.runtimes", "edgebench.agent.sensors"),
    "edgebench.agent.optimize": (*BASE, "edgebench.agent.engine", "edgebench.agent.runtimes"),
    "edgebench.agent.fleet": (*BASE, "edgebench.agent.engine", "edgebench.agent.optimize", "edgebench.agent.sensors",
                              "edgebench.agent.runtimes"),
    "edgebench.agent.cli": ("edgebench.agent",),
    "edgebench.agent": BASE,  # the shared records at the top of the agent package
    "edgebench.server": ("edgebench.agent.errors", "edgebench.agent.modelfile", "edgebench.agent.tls",
                         "edgebench.agent.fleet.protocol", "edgebench.agent.fleet.mqtt", "edgebench.agent.engine",
                         "edgebench.agent"),
    "edgebench.dashboards": ("edgebench.server.schema", "edgebench.agent.errors"),
}
# Command-line modules: where argparse may be imported, and the only server/dashboards modules that may use the
# agent's command-line helpers.
CLI_MODULES = ("edgebench.agent.cli", "edgebench.server.cli", "edgebench.server.commands", "edgebench.server.gates.cli",
               "edgebench.dashboards.commands", "edgebench.dashboards.cli")


def modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            name = ".".join([package, *parts])
            found[name.removesuffix(".__init__") if parts[-1] == "__init__" else name] = path
    return found


def resolve(name: str, known: dict) -> str:
    """The module an imported name lives in (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str, path: Path, known: dict) -> set[str]:
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import mod` imports mod; `from mod import name`, mod
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {resolve(n, known) for n in found if n.startswith("edgebench.")} - {name, ""}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def allowed(target: str, rules: tuple) -> bool:
    return any(target == rule or (rule != "edgebench.agent" and target.startswith(rule + ".")) for rule in rules)


def room_of(module: str) -> str:
    return max((room for room in RULES if module == room or module.startswith(room + ".")), key=len)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for module, targets in graph().items():
        room = room_of(module)
        for target in targets:
            if room_of(target) == room or allowed(target, RULES[room]):
                continue
            if module.startswith(CLI_MODULES) and target.startswith("edgebench.agent"):
                continue  # the collector's and dashboards' commands reuse the agent's argument types
            wrong.append(f"{module} -> {target}")
    assert not wrong, "imports across the house's rules (docs/architecture.md):\n" + "\n".join(sorted(wrong))


def test_the_agent_never_imports_server_code():
    leaks = [f"{m} -> {t}" for m, ts in graph().items() if m.startswith("edgebench.agent")
             for t in ts if not t.startswith("edgebench.agent")]
    assert not leaks, leaks


def test_argparse_only_in_command_line_modules():
    offenders = []
    for name, path in modules().items():
        if name.startswith(CLI_MODULES):
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names) or
               isinstance(n, ast.ImportFrom) and n.module == "argparse" for n in ast.walk(tree)):
            offenders.append(name)
    assert not offenders, f"argparse outside the command-line modules: {offenders}"


def test_the_rules_catch_a_cycle_and_a_wrong_import(tmp_path, monkeypatch):
    """The checks above can fail: a planted cycle and a planted agent -> server import are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from edgebench.agent import b\n")
    b.write_text("from edgebench.agent import a\nimport edgebench.server.collector\n")
    known = {"edgebench.agent.a": a, "edgebench.agent.b": b, "edgebench.server.collector": b}
    assert imports_of("edgebench.agent.a", a, known) == {"edgebench.agent.b"}
    assert imports_of("edgebench.agent.b", b, known) == {"edgebench.agent.a", "edgebench.server.collector"}


def test_the_daemon_and_the_protocol_stay_light():
    """A board's idle daemon (and the collector's protocol checks) import neither numpy nor a runtime."""
    import subprocess
    import sys

    code = ("import sys, edgebench.agent.fleet.daemon, edgebench.agent.fleet.protocol\n"
            "heavy = [m for m in ('numpy', 'onnxruntime', 'ai_edge_litert', 'tflite_runtime') if m in sys.modules]\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result
