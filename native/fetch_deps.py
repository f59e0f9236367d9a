#!/usr/bin/env python3
"""Fetch the runtime headers and libraries the native harness builds against, into a cache.

No registry ships an ONNX Runtime C/C++ SDK or a TensorFlow Lite C library for Linux x86_64 directly, so they
come out of registry packages that contain them (see ../docs/native.md):

- ONNX Runtime headers (API 29): npm ``com.github.asus4.onnxruntime@0.4.9`` (Microsoft's headers, MIT),
  fetched with ``npm pack``. Only the headers are used.
- ``libonnxruntime.so``: the PyPI ``onnxruntime==1.32.0`` wheel (Microsoft's build): taken from the installed
  package when its version matches, else downloaded with ``pip download``.
- The TensorFlow Lite C API: PyPI ``litert-lm-api==0.18.1`` ships ``litert_lm/liblitert-lm.so``, which exports
  the TFLite C API (TfLiteModelCreateFromFile, TfLiteInterpreterCreate, TfLiteXNNPackDelegateCreate, ...).

Every archive and library is pinned by sha256. The result is laid out as::

    CACHE/onnxruntime/include/onnxruntime_cxx_api.h ...
    CACHE/onnxruntime/lib/libonnxruntime.so.1.32.0 (+ libonnxruntime.so link)
    CACHE/tflite/lib/liblitert-lm.so
    CACHE/deps.cmake   (read by native/CMakeLists.txt)

CACHE is ``$EDGEBENCH_NATIVE_DEPS``, else ``$EDGEBENCH_CACHE/native``, else ``~/.cache/edgebench/native``.
Usage: ``python native/fetch_deps.py [--cache DIR] [--python PY] [--allow-unpinned]``; idempotent and quick once
cached. Boards do not need this script: CMake finds the runtime installed there (docs/native.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

ORT_NPM = "com.github.asus4.onnxruntime@0.4.9"
ORT_NPM_TARBALL = "com.github.asus4.onnxruntime-0.4.9.tgz"
ORT_NPM_SHA256 = "e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
ORT_NPM_HEADERS = "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/"
ORT_HEADERS = (  # what the harness includes, and what those include
    "onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h", "onnxruntime_float16.h",
    "onnxruntime_error_code.h", "onnxruntime_ep_c_api.h", "onnxruntime_run_options_config_keys.h",
    "onnxruntime_session_options_config_keys.h", "cpu_provider_factory.h",
)
ORT_API_VERSION = 29

ORT_VERSION = "1.32.0"
ORT_LIB = f"libonnxruntime.so.{ORT_VERSION}"
# sha256 of libonnxruntime.so.1.32.0 in the onnxruntime 1.32.0 cp311 wheels, per machine (aarch64 from the
# manylinux aarch64 wheel; not run here, qemu-user cannot dlopen it). The library is what is checked, so another
# CPython's wheel passes when it ships the same build. Other machines: --allow-unpinned, or the board's runtime.
ORT_LIB_SHA256 = {
    "x86_64": "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
    "aarch64": "49852228a93995158b2a813d4df487d47a1b76b0eaa894507ef49e91b6d7954a",
}
ORT_WHEEL_SHA256 = {
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl":
        "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_aarch64.whl":
        "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
}

LITERT_LM = "litert-lm-api==0.18.1"
LITERT_LM_MEMBER = "litert_lm/liblitert-lm.so"
LITERT_LM_WHEEL_SHA256 = {
    "litert_lm_api-0.18.1-py3-none-manylinux_2_27_x86_64.whl":
        "b2fe9b9a87afe991a7b0d29615b0bfc3d41c7a0ac28e9c54436676482bca2e5b",
    "litert_lm_api-0.18.1-py3-none-manylinux_2_27_aarch64.whl":
        "9c0e02bf7596693d9adbf6bfbb1bf08ae60c61abf9fa22dff19e5afe6af276f2",
}
LITERT_LM_LIB_SHA256 = {
    "x86_64": "b837c18cc98920ea0f979c454795dcabb6c1f132b9b4a4a309243e67d62e94b9",
    "aarch64": "9a2ad189678a4c2148eb498ac4785272cb37f96dc07a3a6019553963b363c00c",
}
TFLITE_C_VERSION = "2.23"  # what liblitert-lm.so 0.18.1 reports from TfLiteVersion()


def default_cache() -> Path:
    if os.environ.get("EDGEBENCH_NATIVE_DEPS"):
        return Path(os.environ["EDGEBENCH_NATIVE_DEPS"])
    base = os.environ.get("EDGEBENCH_CACHE") or Path.home() / ".cache" / "edgebench"
    return Path(base) / "native"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _say(message: str) -> None:
    print(f"fetch_deps: {message}", file=sys.stderr)


def _check(path: Path, expected: Optional[str], what: str, allow_unpinned: bool) -> None:
    actual = sha256(path)
    if expected is None:
        if not allow_unpinned:
            raise SystemExit(f"fetch_deps: no sha256 pin for {what} on {platform.machine()} ({actual}); "
                             f"re-run with --allow-unpinned to accept it, or build against the runtime "
                             f"installed on this machine (docs/native.md)")
        _say(f"warning: {what} is not pinned on this machine; accepted sha256 {actual}")
        return
    if actual != expected:
        raise SystemExit(f"fetch_deps: {what}: sha256 {actual} does not match the pinned {expected}")


def _atomic_write(dest: Path, data: bytes, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, mode)
    os.replace(tmp.name, dest)  # a parallel build never sees half a file


def _atomic_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        pass
    shutil.copyfile(source, tmp.name)
    os.chmod(tmp.name, 0o755)
    os.replace(tmp.name, dest)


# ---------------------------------------------------------------------------------------------------- ORT headers

def fetch_ort_headers(cache: Path) -> Path:
    include = cache / "onnxruntime" / "include"
    stamp = include / ".source"
    if stamp.exists() and stamp.read_text().strip() == ORT_NPM_SHA256:
        return include
    archives = cache / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    tarball = archives / ORT_NPM_TARBALL
    if not (tarball.exists() and sha256(tarball) == ORT_NPM_SHA256):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("fetch_deps: npm is needed once to fetch the ONNX Runtime headers "
                             f"({ORT_NPM}); install Node.js/npm or set ORT_INCLUDE_DIR for CMake")
        _say(f"downloading {ORT_NPM} (~150 MB, once) with npm pack")
        subprocess.run([npm, "pack", ORT_NPM, "--pack-destination", str(archives), "--silent"], check=True,
                       stdout=subprocess.DEVNULL)
    _check(tarball, ORT_NPM_SHA256, ORT_NPM_TARBALL, allow_unpinned=False)
    with tarfile.open(tarball) as tar:
        for name in ORT_HEADERS:
            source = tar.extractfile(ORT_NPM_HEADERS + name)
            if source is None:
                raise SystemExit(f"fetch_deps: {name} missing from {ORT_NPM_TARBALL}")
            _atomic_write(include / name, source.read())
    version_line = next(line for line in (include / "onnxruntime_c_api.h").read_text().splitlines()
                        if line.startswith("#define ORT_API_VERSION"))
    if int(version_line.split()[-1]) != ORT_API_VERSION:
        raise SystemExit(f"fetch_deps: unexpected {version_line!r} in the ONNX Runtime headers")
    stamp.write_text(ORT_NPM_SHA256 + "\n")
    return include


# ---------------------------------------------------------------------------------------------------- ORT library

def _installed_ort_lib(python: str) -> Optional[Path]:
    """libonnxruntime.so.1.32.0 of the onnxruntime package installed for ``python``, if that is 1.32.0."""
    code = ("import importlib.util, importlib.metadata, os, sys\n"
            "spec = importlib.util.find_spec('onnxruntime')\n"
            "if spec is None or not spec.submodule_search_locations: sys.exit(1)\n"
            "print(importlib.metadata.version('onnxruntime'))\n"
            "print(os.path.join(list(spec.submodule_search_locations)[0], 'capi'))\n")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    version, capi = proc.stdout.split("\n")[:2]
    if version.strip() != ORT_VERSION:
        _say(f"installed onnxruntime is {version.strip()}, the pin is {ORT_VERSION}: downloading the pinned wheel")
        return None
    lib = Path(capi.strip()) / ORT_LIB
    return lib if lib.exists() else None


def _pip_download(spec: str, dest: Path, python: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    _say(f"downloading {spec} with pip")
    subprocess.run([python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest),
                    spec], check=True)
    name = spec.split("==")[0].replace("-", "_")
    candidates = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name.lower() + "-")
                  and spec.split("==")[1] in p.name]
    fresh = [p for p in candidates if p not in before] or candidates
    if not fresh:
        raise SystemExit(f"fetch_deps: pip did not leave a wheel for {spec} in {dest}")
    return max(fresh, key=lambda p: p.stat().st_mtime)


def fetch_ort_lib(cache: Path, python: str, allow_unpinned: bool) -> Path:
    lib_dir = cache / "onnxruntime" / "lib"
    dest = lib_dir / ORT_LIB
    pin = ORT_LIB_SHA256.get(platform.machine())
    if dest.exists() and pin is not None and sha256(dest) == pin:
        return dest
    source = _installed_ort_lib(python)
    if source is not None:
        _check(source, pin, f"{source}", allow_unpinned)
        _atomic_copy(source, dest)
    else:
        wheel = _pip_download(f"onnxruntime=={ORT_VERSION}", cache / "archives", python)
        if wheel.name in ORT_WHEEL_SHA256 or pin is None:  # else the library's own pin, below, is the check
            _check(wheel, ORT_WHEEL_SHA256.get(wheel.name), wheel.name, allow_unpinned)
        with zipfile.ZipFile(wheel) as whl:
            _atomic_write(dest, whl.read(f"onnxruntime/capi/{ORT_LIB}"), 0o755)
        _check(dest, pin, ORT_LIB, allow_unpinned)
    link = lib_dir / "libonnxruntime.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ORT_LIB)
    return dest


# ------------------------------------------------------------------------------------------------ TFLite C library

def fetch_tflite_lib(cache: Path, python: str, allow_unpinned: bool) -> Path:
    dest = cache / "tflite" / "lib" / "liblitert-lm.so"
    pin = LITERT_LM_LIB_SHA256.get(platform.machine())
    if dest.exists() and pin is not None and sha256(dest) == pin:
        return dest
    archives = cache / "archives"
    cached = [p for p in archives.glob("litert_lm_api-0.18.1-*.whl") if p.name in LITERT_LM_WHEEL_SHA256
              and sha256(p) == LITERT_LM_WHEEL_SHA256[p.name]]
    wheel = cached[0] if cached else _pip_download(LITERT_LM, archives, python)
    _check(wheel, LITERT_LM_WHEEL_SHA256.get(wheel.name), wheel.name, allow_unpinned)
    with zipfile.ZipFile(wheel) as whl:
        _atomic_write(dest, whl.read(LITERT_LM_MEMBER), 0o755)
    _check(dest, pin, LITERT_LM_MEMBER, allow_unpinned)
    return dest


# --------------------------------------------------------------------------------------------------------- main

def write_cmake(cache: Path, include: Path, ort_lib: Path, tflite_lib: Path) -> Path:
    lines = [
        "# Written by native/fetch_deps.py: the pinned runtime headers and libraries. Do not edit.",
        f'set(EDGEBENCH_DEPS_ORT_INCLUDE_DIR "{include}")',
        f'set(EDGEBENCH_DEPS_ORT_LIBRARY "{ort_lib}")',
        f'set(EDGEBENCH_DEPS_ORT_VERSION "{ORT_VERSION}")',
        f'set(EDGEBENCH_DEPS_TFLITE_LIBRARY "{tflite_lib}")',
        f'set(EDGEBENCH_DEPS_TFLITE_SOURCE "{LITERT_LM}")',
        "",
    ]
    path = cache / "deps.cmake"
    _atomic_write(path, "\n".join(lines).encode())
    manifest = {"onnxruntime_headers": {"npm": ORT_NPM, "sha256": ORT_NPM_SHA256, "path": str(include),
                                        "api_version": ORT_API_VERSION},
                "onnxruntime_library": {"pypi": f"onnxruntime=={ORT_VERSION}", "path": str(ort_lib),
                                        "sha256": sha256(ort_lib)},
                "tflite_library": {"pypi": LITERT_LM, "path": str(tflite_lib), "sha256": sha256(tflite_lib),
                                   "tflite_version": TFLITE_C_VERSION}}
    _atomic_write(cache / "deps.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return path


def default_python() -> str:
    venv = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="where to put them (default: $EDGEBENCH_NATIVE_DEPS, "
                        "$EDGEBENCH_CACHE/native or ~/.cache/edgebench/native)")
    parser.add_argument("--python", default=None, help="the Python whose onnxruntime package to take the library "
                        "from, and whose pip downloads (default: the repo's .venv, else this interpreter)")
    parser.add_argument("--allow-unpinned", action="store_true", help="accept libraries that have no sha256 pin "
                        "for this machine (other architectures)")
    args = parser.parse_args()
    cache = (args.cache or default_cache()).expanduser().resolve()
    python = args.python or default_python()
    include = fetch_ort_headers(cache)
    ort_lib = fetch_ort_lib(cache, python, args.allow_unpinned)
    tflite_lib = fetch_tflite_lib(cache, python, args.allow_unpinned)
    print(write_cmake(cache, include, ort_lib, tflite_lib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
