"""Image files as inputs (--input NAME=cat.jpg), image folders for --eval and --calibration, a TFLite model's metadata
(normalisation, labels), and .npz inputs: on real pictures (scikit-image's, fetched by scripts/fetch_models.py) and
EfficientNet-Lite0 int8, and on a tiny colour classifier built here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgebench.agent.engine import images, inputs, tflite_metadata
from edgebench.agent.errors import InputError
from edgebench.agent.tensors import TensorSpec

from .conftest import RUN_LENGTH, fetch_models, save_onnx
from .test_bad_input import assert_one_line_error

PIL = pytest.importorskip("PIL.Image")
BENCH_FAST = ["--repeats", "1", "--min-runs", "3", "--min-duration", "0", "--warmup-runs", "1",
              "--warmup-duration", "0", "--no-sensors"]
# EfficientNet-Lite0's labels (labels_without_background.txt, 0-based): what the pictures show.
EGYPTIAN_CAT, ESPRESSO, MISSILE = 285, 967, 657


@pytest.fixture(scope="session")
def pictures() -> dict:
    return {name: Path(path) for name, path in fetch_models.fetch(list(fetch_models.PICTURES)).items()}


def write_image(path: Path, pixels: np.ndarray) -> Path:
    PIL.fromarray(pixels.astype(np.uint8)).save(path, format="PNG")
    return path


def solid(color, size=(20, 30)) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (*size, 3)).copy()


def colour_classifier(path: Path, height="H", width="W") -> Path:
    """probs = softmax(4 * mean over H, W of x[:, c]): a float NCHW classifier of red (0), green (1), blue (2)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "colours", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array((4 * np.eye(3)).astype(np.float32), "W")])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def colour_folder(root: Path) -> Path:
    """ImageFolder layout, classes by index: two pictures each of red, green and blue (one a JPEG named .dat)."""
    for index, colour in enumerate(((250, 10, 10), (10, 250, 10), (10, 10, 250))):
        (root / str(index)).mkdir(parents=True)
        write_image(root / str(index) / "a.png", solid(colour))
        PIL.fromarray(solid(colour, (31, 17))).save(root / str(index) / "b.dat", format="JPEG")
    (root / "0" / "notes.txt").write_text("not an image: skipped")
    return root


# ---------------------------------------------------------------- units

def test_images_are_recognised_by_content(tmp_path):
    png = write_image(tmp_path / "picture.npy", solid((1, 2, 3)))  # a PNG, whatever its name says
    assert images.image_kind(png) == "PNG" and inputs.is_image_file(png)
    PIL.fromarray(solid((1, 2, 3))).save(tmp_path / "x.bin", format="WEBP")
    assert images.image_kind(tmp_path / "x.bin") == "WEBP"
    np.save(tmp_path / "a.npy", np.zeros(3))
    assert images.image_kind(tmp_path / "a.npy") is None and not inputs.is_image_file(tmp_path / "a.npy")


def test_layout_from_the_input_shape():
    assert images.layout((1, 224, 224, 3)) == ("NHWC", 3, 224, 224)
    assert images.layout((1, 3, 48, 320)) == ("NCHW", 3, 48, 320)
    assert images.layout((1, 28, 28, 1)) == ("NHWC", 1, 28, 28)
    with pytest.raises(InputError, match="not an image layout"):
        images.layout((1, 1000))


def test_center_crop_then_resize(tmp_path):
    """A 60x20 strip red | green | blue, into a square input: the center crop keeps the green third only."""
    strip = np.concatenate([solid((255, 0, 0), (20, 20)), solid((0, 255, 0), (20, 20)), solid((0, 0, 255), (20, 20))],
                           axis=1)
    pixels, size = images.decode(write_image(tmp_path / "strip.png", strip), 3, 8, 8)
    assert size == (60, 20) and pixels.shape == (8, 8, 3)
    assert (pixels == [0, 255, 0]).all()
    gray, _ = images.decode(tmp_path / "strip.png", 1, 4, 12)  # wide target: the whole strip, one channel
    assert gray.shape == (4, 12, 1)


def test_values_follow_the_dtype(tmp_path):
    path = write_image(tmp_path / "c.png", solid((255, 127, 0), (4, 4)))
    options = images.ImageOptions()
    uint8, how = images.load(path, TensorSpec("x", "uint8", (1, 4, 4, 3), 0.5, 3), (1, 4, 4, 3), 0, options,
                             inputs.quantize)
    assert how.endswith("raw pixels") and uint8.dtype == np.uint8 and (uint8[0, 0, 0] == [255, 127, 0]).all()
    floats, how = images.load(path, TensorSpec("x", "float32", (1, 3, 4, 4)), (1, 3, 4, 4), 0, options,
                              inputs.quantize)
    assert "NCHW" in how and "(default)" in how
    assert floats[0, :, 0, 0] == pytest.approx([1.0, -0.003921, -1.0], abs=1e-5)
    int8, how = images.load(path, TensorSpec("x", "int8", (1, 4, 4, 3), 1 / 128, 0), (1, 4, 4, 3), 0,
                            images.ImageOptions(mean=[0.0], std=[255.0, 255.0, 255.0]), inputs.quantize)
    assert "quantized" in how and list(int8[0, 0, 0]) == [127, 64, 0]  # 1.0 -> clipped to 127, 0.498 -> 64


def test_efficientnet_metadata_and_labels(models):
    path = models["efficientnet_lite0_int8.tflite"]
    meta = tflite_metadata.read(path)
    assert meta.normalization == [((127.0,), (128.0,))]
    labels = tflite_metadata.labels(path)
    assert len(labels) == 1000
    assert (labels[EGYPTIAN_CAT], labels[ESPRESSO], labels[MISSILE]) == ("Egyptian cat", "espresso", "missile")
    assert images.class_index("Egyptian_cat", labels) == EGYPTIAN_CAT == images.class_index("egyptian cat", labels)
    assert images.class_index("285", None) == EGYPTIAN_CAT and images.class_index("no such", labels) is None
    assert tflite_metadata.read(models["sine_float.tflite"]) is None  # no metadata: a hint, never an error
    onnx_model = models["silero_vad.onnx"]
    assert tflite_metadata.read(onnx_model) is None and tflite_metadata.labels(onnx_model) is None


def test_normalisation_flags_then_metadata_then_default(models):
    efficientnet = str(models["efficientnet_lite0_int8.tflite"])
    mean, std, origin = images.ImageOptions(model=efficientnet).normalization(0, 3)
    assert list(mean) == [127.0] * 3 and list(std) == [128.0] * 3 and origin == "model metadata"
    mean, std, origin = images.ImageOptions([1, 2, 3], [4], efficientnet).normalization(0, 3)
    assert list(mean) == [1, 2, 3] and list(std) == [4] * 3 and origin == "--image-mean/--image-std"
    _, std, origin = images.ImageOptions(model=str(models["sine_float.tflite"])).normalization(0, 1)
    assert list(std) == [127.5] and origin == "default"
    with pytest.raises(InputError, match="--image-mean has 2 values; the input has 3 channel"):
        images.ImageOptions([1, 2]).normalization(0, 3)


def test_npz_inputs(tmp_path):
    spec = TensorSpec("x", "float32", (1, 4))
    np.savez(tmp_path / "one.npz", anything=np.ones((1, 4), dtype=np.float32))
    assert inputs.load_npy(tmp_path / "one.npz", spec).sum() == 4  # a single array: whatever its name
    np.savez(tmp_path / "two.npz", x=np.full((1, 4), 2, np.float32), y=np.zeros((1, 4), np.float32))
    assert inputs.load_npy(tmp_path / "two.npz", spec).sum() == 8  # several: the one named after the input
    with pytest.raises(InputError, match=r"holds several arrays \(a, b\), none named 'x'"):
        np.savez(tmp_path / "ab.npz", a=np.ones((1, 4)), b=np.ones((1, 4)))
        inputs.load_npy(tmp_path / "ab.npz", spec)


def test_float_data_for_a_quantized_input_is_quantized(tmp_path):
    """Real values in a float .npy, fed to a uint8 input: quantized with its scale and zero point (as compare does)."""
    spec = TensorSpec("x", "uint8", (1, 3), 0.5, 10)
    np.save(tmp_path / "real.npy", np.array([[-5.0, 0.0, 200.0]], dtype=np.float32))
    source = inputs.InputSource("file", tmp_path / "real.npy")
    assert inputs.load_npy(source.file, spec, source).tolist() == [[0, 10, 255]]  # clipped to uint8's range
    assert source.describe().endswith("(real values quantized: scale 0.5, zero point 10)")
    with pytest.raises(InputError, match="has dtype float32, the model expects int32"):
        inputs.load_npy(source.file, TensorSpec("x", "int32", (1, 3)))  # not quantized: no real values to map


# ---------------------------------------------------------------- the command line, on real pictures

def test_bench_feeds_a_picture(cli, models, pictures):
    result = cli("bench", models["efficientnet_lite0_int8.tflite"], "--input", f"images={pictures['chelsea.png']}",
                 *BENCH_FAST, "--json", "-")
    assert result.code == 0, result
    (feed,) = result.json()["inputs_fed"]
    assert feed["shape"] == [1, 224, 224, 3] and feed["dtype"] == "uint8"
    assert feed["source"].startswith("image:") and "224x224 NHWC, resized from 451x300, raw pixels" in feed["source"]


def test_compare_eval_on_labelled_pictures(cli, models, pictures, tmp_path):
    """EfficientNet-Lite0 int8 on scikit-image's pictures, classes named by label (as the model's metadata spells
    them, or with underscores) or by index: each picture's top-1 is its hand-known class (camera.png, grayscale, fed
    as RGB)."""
    folder = tmp_path / "eval"
    for cls, picture in (("Egyptian_cat", "chelsea.png"), ("espresso", "coffee.png"), (str(MISSILE), "rocket.jpg"),
                         (fetch_models.PICTURE_LABELS["camera.png"], "camera.png")):
        (folder / cls).mkdir(parents=True)
        shutil.copy(pictures[picture], folder / cls / picture)
    path = models["efficientnet_lite0_int8.tflite"]
    result = cli("compare", path, path, "--eval", folder, "--json", "-")
    assert result.code == 0, result
    document = result.json()
    assert document["accuracy"]["reference"] == {"top1": 1.0, "top5": 1.0, "samples": 4}
    assert document["drift"]["max_abs_err"] == 0 and document["drift"]["samples"] == 4
    (folder / "teapot or not").mkdir()
    shutil.copy(pictures["astronaut.png"], folder / "teapot or not")
    assert_one_line_error(cli("compare", path, path, "--eval", folder), 3, "'teapot or not'", "not one of the model's")


def test_eval_needs_a_classifier(cli, models, pictures, tmp_path):
    """DeepLabV3's output is a segmentation map: no top-1 for it, one line instead."""
    (tmp_path / "eval" / "1").mkdir(parents=True)
    shutil.copy(pictures["rocket.jpg"], tmp_path / "eval" / "1")
    path = models["deeplabv3.tflite"]
    assert_one_line_error(cli("compare", path, path, "--eval", tmp_path / "eval"), 3, "needs a classifier output",
                          "1x257x257x21")


def test_a_bad_image_is_one_line(cli, models, tmp_path):
    path = models["efficientnet_lite0_int8.tflite"]
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG header, then nothing
    assert_one_line_error(cli("bench", path, "--input", tmp_path / "cut.jpg", *BENCH_FAST), 3, "cut.jpg",
                          "not a readable image")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(cli("bench", path, "--input", f"images={tmp_path / 'notes.txt'}", *BENCH_FAST), 3,
                          "notes.txt", "not a readable .npy", "not an image")


# ---------------------------------------------------------------- a built colour classifier: layouts, folders

def test_dynamic_image_input_needs_a_shape(cli, tmp_path):
    model = colour_classifier(tmp_path / "colours.onnx")
    red = write_image(tmp_path / "red.png", solid((250, 0, 0)))
    assert_one_line_error(cli("bench", model, "--input", f"x={red}", *BENCH_FAST), 3, "an image needs the input's size",
                          "--shape x=")
    result = cli("bench", model, "--input", f"x={red}", "--shape", "x=1x3x8x8", *BENCH_FAST, "--json", "-")
    assert result.code == 0, result
    assert "8x8 NCHW, resized from 30x20, (pixel - 127.5) / 127.5 (default)" in result.json()["inputs_fed"][0]["source"]


def test_compare_eval_folder_by_class_index(cli, tmp_path):
    model = colour_classifier(tmp_path / "colours.onnx", 16, 16)
    result = cli("compare", model, model, "--eval", colour_folder(tmp_path / "eval"), "--json", "-")
    assert result.code == 0, result
    assert result.json()["accuracy"]["candidate"] == {"top1": 1.0, "top5": 1.0, "samples": 6}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli("compare", model, model, "--eval", empty), 3, "one folder per class")


@pytest.mark.slow
def test_variants_eval_and_calibration_on_image_folders(cli, tmp_path):
    """Each variant's accuracy on the labelled folder, next to its drift, in the table and the JSON; static int8
    calibrated on the folder's images."""
    model = colour_classifier(tmp_path / "colours.onnx", 16, 16)
    folder = colour_folder(tmp_path / "eval")
    result = cli("variants", model, "--only", "fp16,static-int8", "--eval", folder, "--calibration", folder,
                 "--calibration-samples", "4", "--repeats", "2", *RUN_LENGTH, "--out-dir", tmp_path / "out",
                 "--json", tmp_path / "v.json")
    assert result.code == 0, result
    document = __import__("json").loads((tmp_path / "v.json").read_text())
    rows = {row["name"]: row for row in document["variants"]}
    assert set(rows) == {"float32", "fp16", "static-int8"}
    for row in rows.values():
        assert row["accuracy"] == {"top1": 1.0, "top5": 1.0, "samples": 6}, row
    assert document["calibration"] == f"4 images from {folder}"
    assert "accuracy top-1 (top-5)" in result.out and "100.0% (100.0%) of 6" in result.out
