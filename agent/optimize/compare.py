"""`edgebench compare REFERENCE CANDIDATE`: output drift between two models on the same inputs.

Inputs are made once in the real-valued domain and then quantized for each model with that model's own
input scale and zero point, so a float32 and a uint8 model see the same picture. Outputs are dequantized
the same way before they are compared. Both models run in isolated child processes (worker "infer" mode).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgebench.agent.engine import bench, images
from edgebench.agent.engine.executors import in_process_only
from edgebench.agent.engine.inputs import (
    ANY_RANK,
    InputSource,
    build_feeds,
    dequantize,
    format_shape,
    load_image,
    load_npz,
    parse_shapes,
    parse_sources,
    quantize,
    shape_fits,
)
from edgebench.agent.engine.isolation import ChildLimits, run_isolated
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.report import fmt_ratio, utc_now
from edgebench.agent.errors import InferenceError, InputError, UsageError
from edgebench.agent.modelfile import identify
from edgebench.agent.runtimes import choose_runtime, default_runtime
from edgebench.agent.runtimes.base import RuntimeOptions
from edgebench.agent.tensors import TensorSpec

SCHEMA = "edgebench.compare/1"
DEFAULT_TIMEOUT_S = 600.0  # each child (describe, infer) of a comparison


@dataclass
class CompareSettings:
    """What `edgebench compare` asks for: two models, the inputs they see and the output compared."""

    reference: str
    candidate: str
    reference_runtime: Optional[str] = None  # None: from the model's format
    candidate_runtime: Optional[str] = None
    samples: int = 16  # generated input sets, when there is no eval_data
    eval_data: Optional[str] = None  # a labelled set: an .npz ('y' plus 'x' or one array per input) or an image folder
    labels: Optional[str] = None  # --labels FILE: class names for an image folder's class folders
    image_mean: Optional[Sequence[float]] = None  # --image-mean/--image-std (None: the model's metadata)
    image_std: Optional[Sequence[float]] = None
    output: Optional[str] = None  # None: the first output
    shape: Sequence[str] = ()
    input: Sequence[str] = ()
    seed: int = 0
    threads: Optional[int] = None
    timeout_s: Optional[float] = None  # None: DEFAULT_TIMEOUT_S
    repeats: int = 0  # > 0: also benchmark both, repeats interleaved, for the candidate's speed-up with its interval
    run: Optional[RunSettings] = None  # each repeat's run length (None: the engine's defaults)


@dataclass
class ModelRun:
    """One side of a comparison: a model, the runtime that runs it, and its tensors once described."""

    path: str
    runtime: Optional[str] = None
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    inputs: list = field(default_factory=list)  # TensorSpec
    outputs: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    # outputs already computed, by a digest of the input sets: `variants` compares every variant with the same float
    # model on the same sets, which then runs once, not once a variant
    known_outputs: dict = field(default_factory=dict, repr=False, compare=False)

    def request(self, mode: str, **extra) -> dict:
        from dataclasses import asdict

        return {"mode": mode, "model": self.path, "runtime": self.runtime, "options": asdict(self.options),
                **extra}


def prepare(run: ModelRun, limits: ChildLimits) -> None:
    model = identify(run.path)
    run.runtime = run.runtime or default_runtime(model.format)
    in_process_only(run.runtime, "comparing outputs")
    choose_runtime(model.format, run.runtime)
    described = run_isolated(run.request("describe"), limits).result
    run.inputs = [TensorSpec.from_dict(t) for t in described["inputs"]]
    run.outputs = [TensorSpec.from_dict(t) for t in described["outputs"]]
    run.info = {**model.to_dict(), "runtime": described["backend"]}


def inputs_digest(input_sets: Sequence[dict]) -> str:
    digest = hashlib.sha256()
    for feeds in input_sets:
        for name, array in feeds.items():
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def infer_once(run: ModelRun, input_sets: Sequence[dict], limits: ChildLimits) -> list[dict]:
    """``infer``, or its outputs for the same input sets computed before (a fresh child gives the same outputs for the
    same sets in the same order, a stateful model's included)."""
    key = inputs_digest(input_sets)
    if key not in run.known_outputs:
        run.known_outputs[key] = infer(run, input_sets, limits)
    return run.known_outputs[key]


def infer(run: ModelRun, input_sets: Sequence[dict], limits: ChildLimits) -> list[dict]:
    """Run every input set through the model once, in a child; return the output arrays per set."""
    with tempfile.TemporaryDirectory(prefix="edgebench-compare-") as workdir:
        inputs_npz, outputs_npz = Path(workdir, "inputs.npz"), Path(workdir, "outputs.npz")
        stored = {f"{i}/{name}": array for i, feeds in enumerate(input_sets) for name, array in feeds.items()}
        np.savez(inputs_npz, __count__=np.array(len(input_sets)), **stored)
        run_isolated(run.request("infer", inputs_npz=str(inputs_npz), outputs_npz=str(outputs_npz)), limits)
        with np.load(outputs_npz, allow_pickle=False) as saved:
            results: list[dict] = [{} for _ in input_sets]
            for key in saved.files:
                index, name = key.split("/", 1)
                results[int(index)][name] = saved[key]
    return results


# ---------------------------------------------------------------- inputs in the real domain

def pair_specs(reference: Sequence[TensorSpec], candidate: Sequence[TensorSpec], what: str
               ) -> list[tuple[TensorSpec, TensorSpec]]:
    """Match tensors by name, else by position (converters often rename them)."""
    if len(reference) != len(candidate):
        raise InputError(f"the models have different numbers of {what}: {len(reference)} vs {len(candidate)}")
    by_name = {spec.name: spec for spec in candidate}
    if all(spec.name in by_name for spec in reference):
        return [(spec, by_name[spec.name]) for spec in reference]
    return list(zip(reference, candidate))


def check_same_shapes(pairs: Sequence[tuple[TensorSpec, TensorSpec]]) -> None:
    """Both models must take the same data: a static dimension that differs would only fail in the runtime."""
    for ref, cand in pairs:
        if (ANY_RANK,) in (tuple(ref.shape), tuple(cand.shape)):
            continue  # a side that records no shape (TorchScript) takes the other's
        static = [(r, c) for r, c in zip(ref.shape, cand.shape) if isinstance(r, int) and r >= 0
                  and isinstance(c, int) and c >= 0]
        if len(ref.shape) != len(cand.shape) or any(r != c for r, c in static):
            raise InputError(f"input {ref.name!r}: the reference takes {format_shape(ref.shape)}, the candidate "
                             f"{format_shape(cand.shape)}: the models do not take the same inputs")


def generator_spec(ref: TensorSpec, cand: TensorSpec) -> TensorSpec:
    """Generate data for the quantized side when there is one: its integer range spans exactly the real
    values both models were built to accept. Named after the reference so overrides apply to it."""
    chosen = cand if cand.is_quantized and not ref.is_quantized else ref
    ref_shape = cand.shape if tuple(ref.shape) == (ANY_RANK,) else ref.shape  # TorchScript records no shape
    chosen_shape = ref_shape if tuple(chosen.shape) == (ANY_RANK,) else chosen.shape
    shape = tuple(r if isinstance(r, int) and r >= 0 else c for r, c in zip(ref_shape, chosen_shape))
    return TensorSpec(ref.name, chosen.dtype, shape, chosen.scale, chosen.zero_point)


def paired_inputs(pairs: Sequence[tuple[TensorSpec, TensorSpec]], real_sets: Sequence[dict]
                  ) -> tuple[list[dict], list[dict]]:
    """Per-model feeds from real-valued input sets (keyed by the reference's names)."""
    ref_sets, cand_sets = [], []
    for real in real_sets:
        ref_sets.append({ref.name: quantize(real[ref.name], ref) for ref, _ in pairs})
        cand_sets.append({cand.name: quantize(real[ref.name], cand) for ref, cand in pairs})
    return ref_sets, cand_sets


def generated_real_sets(pairs: Sequence[tuple[TensorSpec, TensorSpec]], shape_args: Sequence[str],
                        input_args: Sequence[str], count: int, seed: int,
                        image_options: Optional[images.ImageOptions] = None) -> list[dict]:
    specs = [generator_spec(ref, cand) for ref, cand in pairs]
    shapes, sources = parse_shapes(shape_args), parse_sources(input_args)
    sets = []
    for index in range(count):
        feeds = build_feeds(specs, shapes, sources, seed + index, image_options)
        sets.append({spec.name: dequantize(feeds[spec.name], spec) for spec in specs})
    return sets


def _sample_for(array: np.ndarray, index: int, spec: TensorSpec) -> np.ndarray:
    """Row ``index`` of a labelled set, with or without the model's batch dimension of 1."""
    for candidate in (array[index:index + 1], array[index]):
        if shape_fits(candidate.shape, spec.shape):
            return candidate
    raise InputError(f"--eval: samples of shape {format_shape(array.shape[1:])} do not fit input "
                     f"{spec.name!r} ({format_shape(spec.shape)})")


@dataclass
class EvalData:
    """A labelled set for --eval: an .npz, or an image folder (ImageFolder layout) with how its images are read."""

    path: str
    labels_file: Optional[str] = None  # --labels: class names of the folder's class folders
    shape_args: Sequence[str] = ()  # --shape, for an image input with dynamic dimensions
    image_options: images.ImageOptions = field(default_factory=images.ImageOptions)
    models: Sequence[str] = ()  # whose TFLite metadata may carry class labels, in order of preference

    def real_sets(self, pairs: Sequence[tuple[TensorSpec, TensorSpec]]) -> tuple[list[dict], np.ndarray]:
        if Path(self.path).is_dir():
            return self.folder_sets(pairs)
        return eval_real_sets(self.path, pairs)

    def folder_sets(self, pairs: Sequence[tuple[TensorSpec, TensorSpec]]) -> tuple[list[dict], np.ndarray]:
        """Each image of the folder as one real-valued input set (read for the quantized side, as generated data
        is), and its class index."""
        if len(pairs) != 1:
            raise InputError(f"--eval {self.path}: an image folder feeds a single-input model; this one has "
                             f"{len(pairs)} inputs (give an .npz with one array per input)")
        labels = images.labels_for(self.labels_file, self.models)
        samples = images.image_folder(Path(self.path), labels, "--eval")
        spec = generator_spec(*pairs[0])
        override = parse_shapes(self.shape_args).get(spec.name)
        sets = [{spec.name: dequantize(load_image(InputSource("file", image), spec, 0, override,
                                                  self.image_options), spec)} for image, _ in samples]
        return sets, np.array([index for _, index in samples], dtype=np.int64)


def eval_real_sets(path: str, pairs: Sequence[tuple[TensorSpec, TensorSpec]]) -> tuple[list[dict], np.ndarray]:
    """Real-valued input sets and labels from an .npz with 'y' plus 'x' (one input) or one array per input."""
    data = load_npz(path, "--eval")
    if "y" not in data:
        raise InputError(f"--eval {path}: needs an array 'y' of class labels (it has: {', '.join(data)})")
    labels = np.asarray(data["y"])
    if labels.dtype.kind not in "iu":
        raise InputError(f"--eval {path}: 'y' holds {labels.dtype}, not integer class indices")
    labels = labels.astype(np.int64).reshape(-1)
    arrays = {}
    for ref, _ in pairs:
        key = ref.name if ref.name in data else ("x" if len(pairs) == 1 and "x" in data else None)
        if key is None:
            raise InputError(f"--eval {path}: no array for input {ref.name!r} (give 'x' or '{ref.name}')")
        if len(data[key]) != len(labels):
            raise InputError(f"--eval {path}: {key!r} has {len(data[key])} samples but 'y' has {len(labels)}")
        arrays[ref.name] = data[key]
    sets = [{ref.name: dequantize(_sample_for(arrays[ref.name], i, ref), ref) for ref, _ in pairs}
            for i in range(len(labels))]
    return sets, labels


# ---------------------------------------------------------------- drift

def drift(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict:
    """Drift of real-valued outputs, one array per input set: errors, cosine similarity, top-1 agreement."""
    ref = [np.asarray(a, dtype=np.float64).reshape(-1) for a in reference]
    cand = [np.asarray(a, dtype=np.float64).reshape(-1) for a in candidate]
    for side, arrays in (("reference", ref), ("candidate", cand)):
        bad = next((i for i, a in enumerate(arrays) if not np.isfinite(a).all()), None)
        if bad is not None:
            raise InferenceError(f"the {side} model's output on input set {bad} holds NaN or infinite values: "
                                 f"drift is undefined")
    for a, b in zip(ref, cand):
        if a.shape != b.shape:
            raise InputError(f"the outputs differ in size: {a.size} vs {b.size} values")
    diff = np.concatenate([a - b for a, b in zip(ref, cand)])
    if not diff.size:
        raise InputError("the compared output is empty (0 values): nothing to measure; check --shape")
    flat_ref = np.concatenate(ref)
    value_range = float(flat_ref.max() - flat_ref.min()) if flat_ref.size else 0.0
    cosines = [cosine(a, b) for a, b in zip(ref, cand)]
    top1 = [int(np.argmax(a) == np.argmax(b)) for a, b in zip(ref, cand)]
    return {
        "samples": len(ref),
        "max_abs_err": float(np.abs(diff).max()),
        "mean_abs_err": float(np.abs(diff).mean()),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "reference_range": value_range,
        "cosine_mean": float(np.mean(cosines)),
        "cosine_min": float(np.min(cosines)),
        "top1_agreement": float(np.mean(top1)),
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norm)


def is_classifier(spec: TensorSpec) -> bool:
    """One score vector per input: [C], [1, C] or [N, C] with a dynamic batch, C > 1."""
    dims = list(spec.shape)
    if dims and not (isinstance(dims[0], int) and dims[0] >= 0):
        dims = dims[1:]  # a dynamic leading dimension is the batch
    dims = [d for d in dims if d != 1]
    return len(dims) == 1 and isinstance(dims[0], int) and dims[0] > 1


# What scores that are class probabilities add up to: 1 for a softmax, less for a quantized one, whose many small
# probabilities round to 0 (EfficientNet-Lite0 int8's uint8 softmax adds up to about 0.85).
DISTRIBUTION_SUM = (0.5, 1.15)


def is_distribution(outputs: Sequence[np.ndarray]) -> bool:
    """Class probabilities: per input set, scores in [0, 1] that add up to about 1 (a softmax output). Top-1 agreement
    means something for them; for landmarks, boxes or an embedding, whose argmax is arbitrary, it does not."""
    low, high = DISTRIBUTION_SUM
    for output in outputs:
        values = np.asarray(output, dtype=np.float64).reshape(-1)
        if values.min() < -1e-6 or values.max() > 1 + 1e-6 or not low <= values.sum() <= high:
            return False
    return bool(outputs)


def accuracy(outputs: Sequence[np.ndarray], labels: np.ndarray) -> dict:
    scores = [np.asarray(o, dtype=np.float64).reshape(-1) for o in outputs]
    classes = min(s.size for s in scores)
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise InputError(f"--eval: class index {int(labels.max() if labels.max() >= classes else labels.min())} is "
                         f"outside the output's {classes} scores (0 to {classes - 1})")
    top1 = np.mean([int(np.argmax(s) == y) for s, y in zip(scores, labels)])
    top5 = np.mean([int(y in np.argsort(s)[-5:]) for s, y in zip(scores, labels)])
    return {"top1": float(top1), "top5": float(top5), "samples": int(len(labels))}


def pick_output(pairs: Sequence[tuple[TensorSpec, TensorSpec]], name: Optional[str]) -> tuple[TensorSpec, TensorSpec]:
    if name is None:
        return pairs[0]
    for ref, cand in pairs:
        if name in (ref.name, cand.name):
            return ref, cand
    raise UsageError(f"--output {name!r}: the outputs are {', '.join(r.name for r, _ in pairs)}")


@dataclass
class Comparison:
    reference: ModelRun
    candidate: ModelRun
    limits: ChildLimits = field(default_factory=ChildLimits)

    def run(self, real_sets: Sequence[dict], output: Optional[str] = None, labels=None) -> dict:
        ref_sets, cand_sets = paired_inputs(self.input_pairs(), real_sets)
        ref_spec, cand_spec = pick_output(pair_specs(self.reference.outputs, self.candidate.outputs, "outputs"),
                                          output)  # before running anything: a wrong --output costs nothing
        if labels is not None and not is_classifier(ref_spec):
            raise InputError(f"--eval: accuracy needs a classifier output (one score per class), and output "
                             f"{ref_spec.name!r} is {format_shape(ref_spec.shape)}: compare it without --eval")
        ref_out = infer_once(self.reference, ref_sets, self.limits)
        cand_out = infer(self.candidate, cand_sets, self.limits)
        ref_real = [dequantize(o[ref_spec.name], ref_spec) for o in ref_out]
        cand_real = [dequantize(o[cand_spec.name], cand_spec) for o in cand_out]
        result = {"output": ref_spec.name, "drift": drift(ref_real, cand_real)}
        if not (is_classifier(ref_spec) and (labels is not None or is_distribution(ref_real))):
            result["drift"]["top1_agreement"] = None
        if labels is not None:
            result["accuracy"] = {"reference": accuracy(ref_real, labels), "candidate": accuracy(cand_real, labels)}
        return result

    def run_generated(self, shape_args: Sequence[str], input_args: Sequence[str], count: int, seed: int,
                      output: Optional[str] = None, image_options: Optional[images.ImageOptions] = None) -> dict:
        """Drift on ``count`` generated input sets (seeds seed..seed+count-1, so every caller gets the same)."""
        real_sets = generated_real_sets(self.input_pairs(), shape_args, input_args, count, seed, image_options)
        return self.run(real_sets, output)

    def run_eval(self, data: EvalData, output: Optional[str] = None) -> dict:
        """Drift on a labelled set, and the accuracy (top-1, top-5) of both models on it."""
        real_sets, labels = data.real_sets(self.input_pairs())
        return self.run(real_sets, output, labels)

    def input_pairs(self) -> list[tuple[TensorSpec, TensorSpec]]:
        for side in (self.reference, self.candidate):
            if not side.inputs:
                prepare(side, self.limits)
        pairs = pair_specs(self.reference.inputs, self.candidate.inputs, "inputs")
        check_same_shapes(pairs)
        return pairs


def _ms(value: dict) -> str:
    ci = value.get("ci")
    return f"{value['estimate']:.3g} ms" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")


def render(document: dict) -> str:
    d = document["drift"]
    lines = [
        f"reference  {document['reference']['name']} ({document['reference']['runtime']['runtime']})",
        f"candidate  {document['candidate']['name']} ({document['candidate']['runtime']['runtime']})",
        f"output     {document['output']} · {d['samples']} input sets",
        f"drift      max abs err {d['max_abs_err']:.4g} · mean abs err {d['mean_abs_err']:.4g} · "
        f"rmse {d['rmse']:.4g} (reference range {d['reference_range']:.4g})",
        f"           cosine similarity mean {d['cosine_mean']:.5f}, min {d['cosine_min']:.5f}",
    ]
    if d.get("top1_agreement") is not None:
        lines.append(f"           top-1 agreement {d['top1_agreement']:.1%}")
    if "accuracy" in document:
        ref, cand = document["accuracy"]["reference"], document["accuracy"]["candidate"]
        lines.append(f"accuracy   reference top-1 {ref['top1']:.1%} (top-5 {ref['top5']:.1%}) · candidate top-1 "
                     f"{cand['top1']:.1%} (top-5 {cand['top5']:.1%}) on {ref['samples']} labelled samples")
    if "latency" in document:
        lat = document["latency"]
        ref, cand = lat["reference"]["p50_ms"], lat["candidate"]["p50_ms"]
        lines.append(f"latency    p50 reference {_ms(ref)} · candidate {_ms(cand)} · candidate speed-up "
                     f"{fmt_ratio(lat['speedup'])} ({lat['repeats']} repeats each, interleaved)")
    return "\n".join(lines)


def run(settings: CompareSettings) -> dict:
    """The drift report (schema edgebench.compare/1) of the candidate against the reference."""
    parse_shapes(settings.shape)  # syntax errors before two models are loaded
    parse_sources(settings.input)
    options = RuntimeOptions(threads=settings.threads)
    limits = ChildLimits(timeout_s=settings.timeout_s or DEFAULT_TIMEOUT_S, rss_interval_s=None)
    comparison = Comparison(ModelRun(settings.reference, settings.reference_runtime, options),
                            ModelRun(settings.candidate, settings.candidate_runtime, options), limits)
    image_options = images.ImageOptions(settings.image_mean, settings.image_std, settings.reference)
    if settings.eval_data:
        result = comparison.run_eval(EvalData(settings.eval_data, settings.labels, settings.shape, image_options,
                                              (settings.reference, settings.candidate)), settings.output)
    else:
        result = comparison.run_generated(settings.shape, settings.input, settings.samples, settings.seed,
                                          settings.output, image_options)
    document = {"schema": SCHEMA, "created": utc_now(), "reference": comparison.reference.info,
                "candidate": comparison.candidate.info, **result}
    if settings.repeats:
        document["latency"] = latency(settings, comparison)
    return document


def latency(settings: CompareSettings, comparison: Comparison) -> dict:
    """Both models benchmarked with their repeats interleaved (bench.run_interleaved): each one's p50/p90 with its
    interval, and the candidate's speed-up over the reference with a paired interval."""
    requests = [bench.BenchRequest(model=run.path, runtime=run.runtime, options=run.options,
                                   settings=replace(settings.run or RunSettings()), shape_args=settings.shape,
                                   input_args=settings.input, image_mean=settings.image_mean,
                                   image_std=settings.image_std, seed=settings.seed, repeats=settings.repeats,
                                   limits=ChildLimits(timeout_s=settings.timeout_s or DEFAULT_TIMEOUT_S))
                for run in (comparison.reference, comparison.candidate)]
    reference, candidate = bench.run_interleaved(requests, seed=settings.seed)
    for side in (reference, candidate):
        if side.error is not None:
            raise type(side.error)(f"benchmarking {Path(side.request.model).name}: {side.error}")

    def side(report: dict) -> dict:
        interval = report["stats"]["interval"]
        return {key: {k: interval[key][k] for k in ("estimate", "ci")} for key in ("p50_ms", "p90_ms")}

    return {"repeats": settings.repeats, "interleave": reference.report["interleave"],
            "reference": side(reference.report), "candidate": side(candidate.report),
            "speedup": bench.speedup(reference.report, candidate.report)}
