"""A stand-in ``adb`` for the tests: it answers ``adb -s SERIAL shell '<command>'`` from a recorded board
tree instead of a phone. Files come from $FAKE_ADB_ROOT, other commands from its commands/ folder, the way
ReplayRunner names them. Every call is appended to $FAKE_ADB_LOG. Only the shell forms edgebench sends are
understood: cat, echo, and the ``sh -c`` snippets of RemoteFS and AdbRunner. It imports nothing from
edgebench, to start fast; test_cli checks its copies of the markers against the package's."""

from __future__ import annotations

import glob
import os
import re
import shlex
import sys

MARK = "<<<edgebench-file>>>"  # edgebench.agent.sensors.fs._MARK
FAIL = "<<<edgebench-unreadable>>>"  # edgebench.agent.sensors.fs._FAIL
ROOT = os.environ.get("FAKE_ADB_ROOT", "")


def replay_name(argv) -> str:  # edgebench.agent.sensors.commands.replay_name
    return "_".join(argv).replace("/", "%2F")


def read(path: str):
    try:
        with open(ROOT + path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def shell(argv):
    if argv[0] == "echo":
        return " ".join(argv[1:]) + "\n", 0
    if argv[0] == "cat":
        text = read(argv[1])
        return (text, 0) if text is not None else ("", 1)
    if argv[:2] == ["sh", "-c"]:
        script = argv[2]
        if script.startswith('for f in "$@"'):
            out = []
            for path in argv[4:]:
                text = read(path)
                out.append(f"{MARK} {path}\n" + (text if text is not None else FAIL + "\n"))
            return "".join(out), 0
        m = re.fullmatch(r"ls -d (\S+) 2>/dev/null", script)
        if m:
            found = sorted(p[len(ROOT):] for p in glob.glob(ROOT + m.group(1)))
            return "".join(p + "\n" for p in found), 0 if found else 2
        m = re.fullmatch(r"\[ -e (\S+) \] && echo yes", script)
        if m:
            path = shlex.split(m.group(1))[0]
            return ("yes\n", 0) if os.path.exists(ROOT + path) else ("", 1)
        m = re.fullmatch(r"command -v (\S+)", script)
        if m:
            name = replay_name([m.group(1)])
            known = any(f == name or f.startswith(name + "_") for f in os.listdir(os.path.join(ROOT, "commands")))
            return (f"/system/bin/{m.group(1)}\n", 0) if known else ("", 1)
    text = None
    path = os.path.join(ROOT, "commands", replay_name(argv))
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    return (text, 0) if text is not None else (f"/system/bin/sh: {argv[0]}: inaccessible or not found\n", 127)


def main() -> int:
    args = sys.argv[1:]
    with open(os.environ["FAKE_ADB_LOG"], "a", encoding="utf-8") as log:
        log.write(repr(args) + "\n")
    if args[:1] != ["-s"] or args[2:3] != ["shell"] or len(args) != 4:
        sys.stderr.write("fake adb: unsupported invocation\n")
        return 1
    if args[1] != os.environ.get("FAKE_ADB_SERIAL"):
        sys.stderr.write(f"adb: device '{args[1]}' not found\n")
        return 1
    out, code = shell(shlex.split(args[3]))
    (sys.stdout if code == 0 else sys.stderr).write(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
