#!/usr/bin/env python3
"""Build llama.cpp once into a cache, and install llama-cpp-python's Python bindings against that build.

Why: ``pip install llama-cpp-python`` compiles llama.cpp, its common library and mtmd from source every time it
installs (about 17 minutes on the 2-core CI machines), and a fresh virtualenv (``make clean``) would pay that again.
Here the pinned sdist's own vendored llama.cpp (only its ``llama`` target: ~1.5-3 minutes on 2 cores) is built once
per version, machine and CPU (the build uses ``-march=native``, so another CPU gets its own build), and the bindings
are installed without compiling (``-DLLAMA_BUILD=OFF``, seconds) with the cached libraries copied into their
``llama_cpp/lib/``. The same build gives ``llama-bench`` (``--tools``), so edgebench's numbers and llama.cpp's own
tool run the same code. Boards do not use this script: ``pip install 'edgebench[llm]'`` compiles there
(docs/deploy.md).

Layout (CACHE is ``--cache``, else ``$EDGEBENCH_CACHE/llama.cpp``, else ``~/.cache/edgebench/llama.cpp``)::

    CACHE/archives/llama_cpp_python-0.3.36.tar.gz         the sdist, pinned by sha256
    CACHE/src/llama_cpp_python-0.3.36/vendor/llama.cpp/   its llama.cpp, extracted once
    CACHE/0.3.36-x86_64-<cpu>/build/                       the CMake build tree, kept (--tools builds one more target)
    CACHE/0.3.36-x86_64-<cpu>/lib/                         libllama.so*, libggml*.so* (RUNPATH $ORIGIN)
    CACHE/0.3.36-x86_64-<cpu>/bin/llama-bench              with --tools (RUNPATH $ORIGIN/../lib)
    CACHE/0.3.36-x86_64-<cpu>/built.json                   the marker, written last

Usage: ``python scripts/build_llama.py [--cache DIR] [--python PY] [--tools]``; idempotent, well under a second once
built and installed. Progress goes to stderr; a failure is one ``build_llama:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import filecmp
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from edgebench.agent.modelfile import file_sha256  # run by the project's virtualenv (make llm)

LLAMA_CPP_PYTHON = "0.3.36"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SOURCE_ROOT = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
LLAMA_CPP_DIR = f"{SOURCE_ROOT}/vendor/llama.cpp"
SKIPPED = ("models/", "docs/")  # 113 of its 176 MB: tokenizer test vocabularies and documentation, not built

# The bindings' runtime dependencies (the sdist's Requires-Dist), module name -> requirement.
BINDING_DEPS = {"numpy": "numpy>=1.20.0", "typing_extensions": "typing-extensions>=4.5.0",
                "diskcache": "diskcache>=5.6.1", "jinja2": "jinja2>=2.11.3"}
BINDINGS_CMAKE_ARGS = "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"  # Python part only: no compiler run

CONFIGURE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON",
    # The libraries find each other next to themselves, llama-bench finds them in ../lib; set at link time in the
    # build tree already, so the files are copied out as they are (llama.cpp's install rules have no components).
    "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../lib", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
)
LIB_PATTERNS = ("libllama.so*", "libggml*.so*")  # what the bindings load: libllama.so and what it needs
TOOLS = {"llama-bench": ("libllama-common.so*", "libllama-bench-impl.so*")}  # tool -> the shared libraries it adds
MARKER = "built.json"

log = logging.getLogger("build_llama")


class BuildError(Exception):
    """A step failed; the message is the one line the user sees."""


# ---------------------------------------------------------------------------------------------------------- helpers

def default_cache() -> Path:
    base = os.environ.get("EDGEBENCH_CACHE") or Path.home() / ".cache" / "edgebench"
    return Path(base) / "llama.cpp"


def default_python() -> str:
    venv = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def cpu_key() -> str:
    """A short hash of this CPU's feature flags: what ``-march=native`` compiled for."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    match = re.search(r"^(?:flags|Features|isa)\s*:(.*)$", text, re.MULTILINE)
    features = " ".join(sorted(match.group(1).split())) if match else platform.processor() or "unknown"
    return hashlib.sha256(features.encode()).hexdigest()[:12]


def build_root(cache: Path) -> Path:
    return cache / f"{LLAMA_CPP_PYTHON}-{platform.machine()}-{cpu_key()}"


def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except OSError as exc:
        raise BuildError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BuildError(f"{what} failed (exit {proc.returncode}): {tail[0]}")
    return proc


def copy_entry(source: Path, dest: Path) -> bool:
    """Copy a file or a symlink (as a symlink) to ``dest``, atomically; False if ``dest`` was the same already."""
    if source.is_symlink():
        target = os.readlink(source)
        if dest.is_symlink() and os.readlink(dest) == target:
            return False
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
    else:
        if dest.is_file() and not dest.is_symlink() and filecmp.cmp(source, dest, shallow=False):
            return False
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as handle:
            tmp = Path(handle.name)
        shutil.copy2(source, tmp)
    os.replace(tmp, dest)  # a process loading the library never sees half a file
    return True


def matching(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({path for pattern in patterns for path in directory.glob(pattern)})


# --------------------------------------------------------------------------------------------------------- the sdist

def fetch_sdist(cache: Path, python: str) -> Path:
    archives = cache / "archives"
    sdist = archives / SDIST
    if sdist.exists() and file_sha256(sdist) == SDIST_SHA256:
        return sdist
    archives.mkdir(parents=True, exist_ok=True)
    log.info("downloading llama-cpp-python %s's sdist (76 MB, once) with pip", LLAMA_CPP_PYTHON)
    run([python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(archives),
         f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], "pip download")
    if not sdist.exists():
        raise BuildError(f"pip download left no {SDIST} in {archives}")
    actual = file_sha256(sdist)
    if actual != SDIST_SHA256:
        sdist.unlink()
        raise BuildError(f"{SDIST}: sha256 {actual} does not match the pinned {SDIST_SHA256}")
    return sdist


def extract_source(cache: Path, sdist: Path) -> Path:
    """The sdist's vendored llama.cpp, but SKIPPED, extracted once (into a temporary folder first)."""
    src = cache / "src"
    llama_cpp = src / LLAMA_CPP_DIR
    stamp = src / SOURCE_ROOT / ".extracted"
    if stamp.exists() and stamp.read_text().strip() == SDIST_SHA256:
        return llama_cpp
    log.info("extracting llama.cpp from %s", sdist.name)
    src.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=src, prefix=".extract."))
    with tarfile.open(sdist) as tar:
        prefix = LLAMA_CPP_DIR + "/"
        members = [m for m in tar.getmembers()
                   if m.name.startswith(prefix) and not m.name[len(prefix):].startswith(SKIPPED)]
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(staging, members=members, **extra)
    shutil.rmtree(src / SOURCE_ROOT, ignore_errors=True)
    os.replace(staging / SOURCE_ROOT, src / SOURCE_ROOT)
    shutil.rmtree(staging)
    stamp.write_text(SDIST_SHA256 + "\n")
    return llama_cpp


# --------------------------------------------------------------------------------------------------------- the build

def configure(source: Path, build: Path, build_log: Path) -> None:
    stamp = build / ".configure-args"
    args = "\n".join(CONFIGURE_ARGS)
    if (build / "CMakeCache.txt").exists() and stamp.exists() and stamp.read_text() == args:
        return
    log.info("configuring llama.cpp (CMake, -march=native) in %s", build)
    stream(["cmake", "-S", str(source), "-B", str(build), *CONFIGURE_ARGS], build_log, "cmake configure")
    stamp.write_text(args)


def compile_targets(build: Path, targets: list[str], build_log: Path) -> None:
    jobs = os.cpu_count() or 1
    log.info("building %s with %d jobs (~3 min on 2 cores, once; log: %s)", " ".join(targets), jobs, build_log)
    stream(["cmake", "--build", str(build), "--parallel", str(jobs), "--target", *targets], build_log, "cmake build")


def stream(cmd: list[str], build_log: Path, what: str) -> None:
    """Run ``cmd`` with its output appended to ``build_log``; say every minute how far it got."""
    start = last = time.monotonic()
    compiled = 0
    with open(build_log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as exc:
            raise BuildError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            compiled += "Building C" in line
            if time.monotonic() - last >= 60:
                last = time.monotonic()
                log.info("  %s: %d files compiled, %.0f min", what, compiled, (last - start) / 60)
        code = proc.wait()
    if code != 0:
        lines = build_log.read_text(errors="replace").splitlines()
        errors = [line.strip() for line in lines if "error:" in line.lower()]
        hint = f": {errors[-1][:200]}" if errors else ""
        raise BuildError(f"{what} failed (exit {code}){hint}; the whole log is {build_log}")
    files = f", {compiled} files compiled" if compiled else ""
    log.info("  %s: done in %.0f s%s", what, time.monotonic() - start, files)


def collect(build: Path, root: Path, tools: list[str]) -> list[str]:
    """Copy the libraries (and the tools) out of the build tree into ``root/lib`` (``root/bin``)."""
    out_dir = build / "bin"
    lib = root / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    patterns = LIB_PATTERNS + tuple(p for tool in tools for p in TOOLS[tool])
    names = []
    for source in matching(out_dir, patterns):
        copy_entry(source, lib / source.name)
        names.append(source.name)
    if not (lib / "libllama.so").exists():
        raise BuildError(f"the build left no libllama.so in {out_dir}")
    for tool in tools:
        (root / "bin").mkdir(exist_ok=True)
        copy_entry(out_dir / tool, root / "bin" / tool)
    return names


def check_links(binary: Path, lib: Path) -> None:
    """Every llama/ggml library ``binary`` needs resolves from ``lib`` alone (its RUNPATH), nothing is missing."""
    if shutil.which("ldd") is None:
        log.warning("no ldd here: not checking how %s resolves its libraries", binary.name)
        return
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    output = run(["ldd", str(binary)], f"ldd {binary.name}", env=env).stdout
    for line in output.splitlines():
        name, _, where = line.strip().partition(" => ")
        if "not found" in where:
            raise BuildError(f"{binary}: {name} not found (ldd)")
        if name.startswith(("libllama", "libggml")) and Path(where.split(" (")[0]).parent.resolve() != lib.resolve():
            raise BuildError(f"{binary}: {name} resolves to {where}, not to {lib}")


def read_marker(root: Path) -> Optional[dict]:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("llama_cpp_python") != LLAMA_CPP_PYTHON or marker.get("sdist_sha256") != SDIST_SHA256:
        return None
    files = [root / "lib" / name for name in marker.get("libs", [])]
    files += [root / "bin" / tool for tool in marker.get("tools", [])]
    return marker if files and all(path.exists() for path in files) else None


def build(cache: Path, python: str, tools: list[str]) -> Path:
    """``root``, with ``root/lib`` (and ``root/bin``) complete: from the marker, or built now."""
    root = build_root(cache)
    marker = read_marker(root)
    if marker is not None and set(tools) <= set(marker["tools"]):
        return root
    tools = sorted(set(tools) | set(marker["tools"] if marker else []))
    for program in ("cmake", "c++"):
        if shutil.which(program) is None:
            raise BuildError(f"{program} is needed to build llama.cpp once (apt-get install cmake g++)")
    source = extract_source(cache, fetch_sdist(cache, python))
    build_dir = root / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    build_log = root / "build.log"
    configure(source, build_dir, build_log)
    compile_targets(build_dir, ["llama", *tools], build_log)
    (root / MARKER).unlink(missing_ok=True)
    libs = collect(build_dir, root, tools)
    for binary in [root / "lib" / "libllama.so", *(root / "bin" / tool for tool in tools)]:
        check_links(binary, root / "lib")
    marker = {"llama_cpp_python": LLAMA_CPP_PYTHON, "sdist_sha256": SDIST_SHA256, "machine": platform.machine(),
              "cpu_key": cpu_key(), "configure": list(CONFIGURE_ARGS), "tools": tools, "libs": libs}
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    log.info("llama.cpp %s built: %s", LLAMA_CPP_PYTHON, root)
    return root


# ------------------------------------------------------------------------------------------------- the Python side

PROBE = """
import importlib.metadata, importlib.util, json, sys
try:
    version = importlib.metadata.version('llama_cpp_python')
except importlib.metadata.PackageNotFoundError:
    version = None
spec = importlib.util.find_spec('llama_cpp')  # found, not imported: the import needs the library
package = list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None
missing = [name for name in sys.argv[1:] if importlib.util.find_spec(name) is None]
print(json.dumps({'version': version, 'package': package, 'missing': missing}))
"""

SMOKE = """
import llama_cpp
llama_cpp.llama_backend_init()
info = llama_cpp.llama_print_system_info().decode()
llama_cpp.llama_backend_free()
print(llama_cpp.llama_cpp._lib._name)
print(info.strip())
"""


def probe(python: str) -> dict:
    out = run([python, "-c", PROBE, *BINDING_DEPS], f"probing {python}").stdout
    return json.loads(out.strip().splitlines()[-1])


def install_bindings(cache: Path, python: str) -> Path:
    """llama-cpp-python's Python part, at the pinned version, in ``python``'s environment; its package folder."""
    state = probe(python)
    if state["missing"]:
        log.info("installing the bindings' dependencies: %s", " ".join(state["missing"]))
        run([python, "-m", "pip", "install", "--quiet", *(BINDING_DEPS[m] for m in state["missing"])], "pip install")
    if state["version"] != LLAMA_CPP_PYTHON or state["package"] is None:
        log.info("installing llama-cpp-python %s's Python bindings (no compile) for %s", LLAMA_CPP_PYTHON, python)
        env = {**os.environ, "CMAKE_ARGS": BINDINGS_CMAKE_ARGS}
        run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(fetch_sdist(cache, python))],
            "pip install llama-cpp-python", env=env)
        state = probe(python)
    if state["version"] != LLAMA_CPP_PYTHON or state["package"] is None:
        raise BuildError(f"llama-cpp-python {LLAMA_CPP_PYTHON} is not importable from {python} after installing it")
    return Path(state["package"])


def install_libs(root: Path, package: Path) -> Path:
    """The cached core libraries in ``package/lib``: copied when they differ, stale versions removed."""
    source = root / "lib"
    dest = package / "lib"
    dest.mkdir(exist_ok=True)
    wanted = matching(source, LIB_PATTERNS)
    copied = [path.name for path in wanted if copy_entry(path, dest / path.name)]
    names = {path.name for path in wanted}
    for stale in matching(dest, LIB_PATTERNS):
        if stale.name not in names:
            stale.unlink()
            copied.append(f"-{stale.name}")
    if copied:
        log.info("libraries updated in %s: %s", dest, " ".join(copied))
    return dest


def smoke(python: str, lib: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_LIB_PATH"}
    loaded, _, info = run([python, "-c", SMOKE], "import llama_cpp", env=env).stdout.partition("\n")
    if Path(loaded).parent.resolve() != lib.resolve():
        raise BuildError(f"llama_cpp loaded {loaded}, not the library in {lib}")
    return info.strip()


# ---------------------------------------------------------------------------------------------------------- main

@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One build_llama at a time per cache (two make runs at once wait for each other)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="where to build (default: $EDGEBENCH_CACHE/llama.cpp "
                        "or ~/.cache/edgebench/llama.cpp)")
    parser.add_argument("--python", default=None, help="the Python to install the bindings for, and whose pip "
                        "downloads (default: the repo's .venv, else this interpreter)")
    parser.add_argument("--tools", action="store_true", help="also build llama-bench (into CACHE/.../bin)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="build_llama: %(message)s", stream=sys.stderr)
    cache = (args.cache or default_cache()).expanduser().resolve()
    python = args.python or default_python()
    try:
        with locked(cache):
            root = build(cache, python, list(TOOLS) if args.tools else [])
            lib = install_libs(root, install_bindings(cache, python))
            info = smoke(python, lib)
    except (BuildError, OSError, tarfile.TarError) as exc:
        print(f"build_llama: {exc}", file=sys.stderr)
        return 1
    log.info("llama_cpp %s loads %s: %s", LLAMA_CPP_PYTHON, lib / "libllama.so", info)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
