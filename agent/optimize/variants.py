"""`edgebench variants MODEL`: float16 and int8 variants of an ONNX, TFLite or PyTorch model, benchmarked, compared,
and the one to ship.

The variants are made by the model format's maker (agent/optimize/makers/: onnxruntime.quantization for ONNX,
ai-edge-quantizer for TFLite, PT2E and ExecuTorch's lowering for a torch.export program or a module factory), then
every model, the float one included, goes through the same engine (bench.run_interleaved) and the same drift
measurement (compare.Comparison), and the recommendation (optimize/recommend.py) picks the variant to ship within the
budgets. A variant that cannot be produced or run gets a row saying why; the rest still run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Sequence

from edgebench.agent.engine import bench, images
from edgebench.agent.engine.generate import GenerationSettings
from edgebench.agent.engine.inputs import (
    InputSource,
    build_feeds,
    format_shape,
    load_image,
    load_npz,
    parse_shapes,
    parse_sources,
)
from edgebench.agent.engine.isolation import ChildLimits
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.report import fmt_latency, fmt_ratio, human_bytes, latency_unit, table, utc_now
from edgebench.agent.errors import EdgebenchError, InputError, ModelError, UsageError
from edgebench.agent.modelfile import GGUF, ModelFile, identify
from edgebench.agent.optimize import compare, llm_drift, recommend
from edgebench.agent.optimize.makers import maker_for
from edgebench.agent.optimize.makers.base import Variant, produce
from edgebench.agent.runtimes import runtime_class
from edgebench.agent.runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)

SCHEMA = "edgebench.variants/2"  # 2: bench/2 reports (repeats), speed-ups with intervals


@dataclass
class VariantsSettings:
    """What `edgebench variants` asks for: which variants of which model, benchmarked how."""

    model: str
    out_dir: Optional[str] = None  # None: MODEL.variants/ next to the model
    only: Optional[Sequence[str]] = None  # None: every kind
    calibration: Optional[str] = None  # an .npz of calibration inputs for static int8, or a folder of images
    calibration_samples: int = 16  # generated calibration sets when there is no .npz; at most this many images
    samples: int = 16  # input sets the drift is measured on (without eval_data)
    eval_data: Optional[str] = None  # --eval: a labelled .npz or image folder; drift and accuracy are measured on it
    drift_data: Optional[str] = None  # --drift-data: real inputs without labels (.npz or image folder): drift only
    labels: Optional[str] = None  # --labels FILE: class names of the image folder's class folders
    image_mean: Optional[Sequence[float]] = None  # --image-mean/--image-std (None: the model's metadata)
    image_std: Optional[Sequence[float]] = None
    shape: Sequence[str] = ()
    input: Sequence[str] = ()
    seed: int = 0
    threads: Optional[int] = None
    providers: Sequence[str] = ()  # ONNX models
    delegates: Sequence[str] = ()  # TFLite models
    budgets: recommend.Budgets = field(default_factory=recommend.Budgets)
    prune: Optional[float] = None  # --prune F: also a magnitude-pruned variant, F of each weight tensor zeroed
    run: RunSettings = field(default_factory=RunSettings)  # per repeat
    repeats: int = 5  # each variant's repeats, interleaved with the others' (bench.run_interleaved)
    bench_limits: ChildLimits = field(default_factory=ChildLimits)  # each variant's benchmark process
    timeout_s: Optional[float] = None  # each describe / drift child; None: compare.DEFAULT_TIMEOUT_S
    generation: Optional[GenerationSettings] = None  # a language model's (GGUF) benchmark; None: the engine's defaults


# ---------------------------------------------------------------- calibration

def image_options(settings: VariantsSettings) -> images.ImageOptions:
    return images.ImageOptions(settings.image_mean, settings.image_std, settings.model)


def image_sets(model_inputs: Sequence, settings: VariantsSettings, folder: str, flag: str,
               limit: Optional[int] = None) -> tuple[list[dict], str]:
    """Each image of ``folder`` (subfolders too, sorted, at most ``limit``) as one input set of a single-input model,
    read as `--input` reads an image (--calibration DIR, --drift-data DIR)."""
    if len(model_inputs) != 1:
        raise InputError(f"{flag} {folder}: a folder of images feeds a single-input model; this one has "
                         f"{len(model_inputs)} inputs (give an .npz with one array per input)")
    files = images.files_in(Path(folder))[:limit]
    if not files:
        raise InputError(f"{flag} {folder}: no image files (JPEG, PNG, BMP, GIF, WebP) in it")
    spec = model_inputs[0]
    override = parse_shapes(settings.shape).get(spec.name)
    options = image_options(settings)
    sets = [{spec.name: load_image(InputSource("file", path), spec, 0, override, options)} for path in files]
    return sets, f"{len(sets)} images from {folder}"


def data_sets(model_inputs: Sequence, settings: VariantsSettings, path: str, flag: str,
              limit: Optional[int] = None) -> tuple[list[dict], str]:
    """Real input sets from ``path``: an .npz (one array per input, or 'x' for a single-input model; first axis =
    samples) or a folder of images; and what they are, in words."""
    if Path(path).is_dir():
        return image_sets(model_inputs, settings, path, flag, limit)
    data = load_npz(path, flag)
    names = [spec.name for spec in model_inputs]
    if len(names) == 1 and names[0] not in data and "x" in data:
        data = {names[0]: data["x"]}
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"{flag} {path}: no array for input(s) {', '.join(missing)} (it has: {', '.join(data)})")
    count = min(len(data[n]) for n in names)
    if not count:
        raise InputError(f"{flag} {path}: holds no samples")
    sets = [{n: data[n][i:i + 1] if data[n].ndim == len(spec.shape) else data[n][i]
             for n, spec in zip(names, model_inputs)} for i in range(count)]
    return sets, f"{count} samples from {path}"


def calibration_sets(model_inputs: Sequence, settings: VariantsSettings) -> tuple[list[dict], str]:
    """User data from --calibration (.npz: one array per input, first axis = samples; or a folder of images, at most
    --calibration-samples) or generated sets."""
    if settings.calibration:
        return data_sets(model_inputs, settings, settings.calibration, "--calibration", settings.calibration_samples
                         if Path(settings.calibration).is_dir() else None)
    shapes, sources = parse_shapes(settings.shape), parse_sources(settings.input)
    sets = [build_feeds(model_inputs, shapes, sources, settings.seed + 1000 + i, image_options(settings))
            for i in range(settings.calibration_samples)]
    return sets, f"{len(sets)} generated input sets (random data: give --calibration for representative ranges)"


def drift_sets(model_inputs: Sequence, settings: VariantsSettings) -> tuple[list[dict], Optional[str]]:
    """--drift-data: the real, unlabelled inputs drift is measured on (every sample of the .npz or image of the
    folder), read before any variant is made; none without it (generated sets, or --eval's labelled set)."""
    if not settings.drift_data:
        return [], None
    if settings.eval_data:
        raise UsageError("--drift-data and --eval: give one (--eval measures drift on its labelled set)")
    return data_sets(model_inputs, settings, settings.drift_data, "--drift-data")


# ---------------------------------------------------------------- benchmarking and drift

def runtime_options(settings: VariantsSettings, maker: ModuleType) -> RuntimeOptions:
    """The options every model of the run is loaded with: the chain given for the format's runtime."""
    options = RuntimeOptions(threads=settings.threads, providers=settings.providers, delegates=settings.delegates)
    runtime_class(maker.RUNTIME).check_options(options)  # --delegate on an ONNX model: refused before any work
    return options


def bench_variants(rows: Sequence[Variant], settings: VariantsSettings, runtime: str, options: RuntimeOptions,
                   progress: Optional[Callable] = None) -> None:
    """Benchmark every variant made, the float model included, with their repeats interleaved (the machine's drift
    hits them alike), then each one's p50 and p90 speed-up against the float model with a paired interval."""
    made = [row for row in rows if not row.error]
    requests = [bench.BenchRequest(
        model=str(row.path), runtime=runtime, options=options, settings=replace(settings.run),
        shape_args=settings.shape, input_args=settings.input, image_mean=settings.image_mean,
        image_std=settings.image_std, seed=settings.seed, limits=settings.bench_limits,
        repeats=settings.repeats, generation=settings.generation) for row in made]
    for row, outcome in zip(made, bench.run_interleaved(requests, progress, seed=settings.seed)):
        row.report = outcome.report
        if outcome.error is not None:
            row.error = f"benchmark failed: {outcome.error}"
    base = rows[0].report
    for row in rows:
        if row.report and base:
            row.speedup = bench.speedup(base, row.report)
            row.speedup_p90 = bench.speedup(base, row.report, "p90_ms")


def measure_drift(base: compare.ModelRun, rows: Sequence[Variant], settings: VariantsSettings,
                  limits: ChildLimits, step: Callable[[str], None], real_sets: Sequence[dict] = ()) -> None:
    """Drift of each variant (``rows[1:]``) against the float model (``rows[0]``, described once, shared by every
    comparison); with --eval, on the labelled set, and each one's accuracy on it, the float model's too; with
    ``real_sets`` (--drift-data), on those."""
    data = compare.EvalData(settings.eval_data, settings.labels, settings.shape, image_options(settings),
                            (settings.model,)) if settings.eval_data else None
    for variant in rows[1:]:
        if variant.error or not variant.path:
            continue
        step(f"drift of {variant.name}" + (" and accuracy" if data else ""))
        comparison = compare.Comparison(base, compare.ModelRun(str(variant.path), base.runtime, base.options), limits)
        try:
            if real_sets:
                result = comparison.run(real_sets)
            elif data:
                result = comparison.run_eval(data)
            else:
                result = comparison.run_generated(settings.shape, settings.input, settings.samples, settings.seed,
                                                  image_options=image_options(settings))
        except EdgebenchError as exc:
            variant.error = f"drift could not be measured: {exc}"
            continue
        variant.drift = result["drift"]
        if "accuracy" in result:
            variant.accuracy = result["accuracy"]["candidate"]
            rows[0].accuracy = rows[0].accuracy or result["accuracy"]["reference"]


def pruned_name(fraction: float) -> str:
    return f"pruned-{fraction * 100:g}%"


def make_pruned(base: Variant, out_dir: Path, fraction: float, maker: ModuleType) -> Variant:
    """The magnitude-pruned variant of the float model ``base`` (optimize/prune.py): same file size and, on dense
    kernels, the same speed; its compressed size (zlib) is in its notes and the table, since that is what pruning
    buys there (docs/pruning.md). Both compressed sizes come from the pruning itself, which measured them."""
    from edgebench.agent.optimize import prune

    model = base.path
    target = out_dir / f"{model.stem}.pruned-{fraction * 100:g}{maker.SUFFIX}"
    compressed: dict = {}

    def make() -> list[str]:
        done = prune.prune(model, target, fraction)
        compressed.update(done["compressed_bytes"])
        sparsity = done["sparsity_after"]["sparsity"]
        return [f"{done['pruned_tensors']} weight tensors magnitude-pruned ({fraction:.0%} each; weights now "
                f"{sparsity:.0%} zero); {human_bytes(compressed['pruned'])} compressed ({prune.COMPRESSION}) "
                f"against the float model's {human_bytes(compressed['original'])}", *done["notes"]]

    row = produce(pruned_name(fraction), make, target, maker.quiet_libraries)
    if row.path is not None:
        row.compressed_bytes, base.compressed_bytes = compressed["pruned"], compressed["original"]
    return row


def check_eval(inputs: Sequence, outputs: Sequence, settings: VariantsSettings) -> None:
    """Read the --eval set once before any variant is made: a bad file or folder stops the command (exit 3) instead
    of reading as every variant's failure."""
    if settings.eval_data:
        output = outputs[0]  # the output drift is measured on
        if not compare.is_classifier(output):
            raise InputError(f"--eval: accuracy needs a classifier output (one score per class), and output "
                             f"{output.name!r} is {format_shape(output.shape)}: run without --eval (--drift-data "
                             f"measures drift on real inputs without labels)")
        compare.EvalData(settings.eval_data, settings.labels, settings.shape, image_options(settings),
                         (settings.model,)).real_sets(compare.pair_specs(inputs, inputs, "inputs"))


# ---------------------------------------------------------------- the table

def render(model_name: str, rows: Sequence[Variant], calibration: Optional[str], advice: dict,
           drift_on: Optional[str] = None) -> str:
    baseline = rows[0].report["stats"] if rows[0].report else None
    unit, scale = latency_unit(baseline["p50_ms"] if baseline else 1.0)
    classifier = any((row.drift or {}).get("top1_agreement") is not None for row in rows)
    headers = ["variant", "size", "p50 " + unit, "p90 " + unit, "p90 vs float", "max abs err (of range)", "cosine"]
    headers += ["top-1"] if classifier else []
    evaluated = any(row.accuracy for row in rows)
    headers += ["accuracy top-1 (top-5)"] if evaluated else []
    zipped = any(row.compressed_bytes for row in rows)
    if zipped:
        headers.insert(2, "compressed")
    body = []
    base_size = rows[0].size_bytes
    for row in rows:
        size = row.size_bytes
        size_text = human_bytes(size)
        if size and base_size and row is not rows[0]:
            size_text += f" ({size / base_size:.0%})"
        packed = [human_bytes(row.compressed_bytes)] if zipped else []
        if row.report is None:
            failed = [row.name, size_text, *packed, "-", "-", "-", "-", row.error or "failed"]
            body.append(failed + (["-"] if classifier else []) + (["-"] if evaluated else []))
            continue
        stats_ = row.report["stats"]
        drift = row.drift or {}
        top1 = drift.get("top1_agreement")
        body.append([
            row.name, size_text, *packed, fmt_latency(stats_["p50_ms"], scale), fmt_latency(stats_["p90_ms"], scale),
            fmt_ratio(row.speedup_p90) if row is not rows[0] else "1.00x",
            _max_error(drift),
            f"{drift['cosine_mean']:.4f}" if drift else "-",
        ] + ([f"{top1:.1%}" if top1 is not None else "-"] if classifier else [])
          + ([_accuracy(row.accuracy)] if evaluated else []))
    lines = [f"variants of {model_name} (p90 vs float: speed-up [95% interval, repeats interleaved]; drift vs the "
             f"float model)", *table(headers, body)]
    lines += [f"  {row.name}: {row.error}" for row in rows if row.error and row.report is not None]
    lines += [f"  {row.name}: {note}" for row in rows for note in row.notes if "size" in note and row.report]
    lines += [f"  {row.name}: outside the budgets: {'; '.join(advice['failures'][row.name])}" for row in rows[1:]
              if row.report is not None and row.drift and advice["failures"].get(row.name)]
    if calibration:
        lines.append(f"static int8 calibrated on {calibration}")
    if drift_on:
        lines.append(f"drift measured on {drift_on}")
    lines.append(advice["line"])
    return "\n".join(lines)


def markdown(document: dict) -> str:
    """The variants table and the recommendation as Markdown, for a pull-request comment (``--markdown FILE``), like
    the release gate's (docs/gates.md)."""
    rows = document["variants"]
    base = rows[0]
    lines = [f"### Variants of `{document['model']['name']}`", "",
             f"**{document['recommendation']['line']}**", "",
             "| variant | size | p90 ms | p90 vs float [95%] | cosine | top-1 agreement | accuracy top-1 |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        report, drift, accuracy = row.get("report") or {}, row.get("drift") or {}, row.get("accuracy") or {}
        p90 = (report.get("stats") or {}).get("p90_ms")
        share = f" ({row['size_bytes'] / base['size_bytes']:.0%})" if row["size_bytes"] and row is not base else ""
        agreement = drift.get("top1_agreement")
        cells = [f"`{row['name']}`", human_bytes(row["size_bytes"]) + share,
                 f"{p90:.3f}" if p90 is not None else row.get("error") or "-",
                 fmt_ratio(row.get("speedup_p90")) if row is not base else "1.00x",
                 f"{drift['cosine_mean']:.4f}" if drift.get("cosine_mean") is not None else "-",
                 f"{agreement:.1%}" if agreement is not None else "-",
                 f"{accuracy['top1']:.1%} of {accuracy['samples']}" if accuracy else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _compress_all(rows: Sequence[Variant]) -> None:
    """Every row's compressed size, for the table beside a pruned variant's (what pruning buys on dense kernels)."""
    from edgebench.agent.optimize.prune import compressed_size

    for row in rows:
        if row.compressed_bytes is None and row.path and row.path.exists():
            row.compressed_bytes = compressed_size(row.path.read_bytes())


def _accuracy(accuracy: Optional[dict]) -> str:
    """``66.7% (100.0%) of 3``: top-1 and top-5 on the --eval set."""
    if not accuracy:
        return "-"
    return f"{accuracy['top1']:.1%} ({accuracy['top5']:.1%}) of {accuracy['samples']}"


def _max_error(drift: dict) -> str:
    """``3.81 (1.9%)``: the max abs error, and what it is of the float output's range."""
    if not drift:
        return "-"
    relative = recommend.relative_drift(drift)
    return f"{drift['max_abs_err']:.3g}" + (f" ({relative:.1%})" if relative is not None else "")


def make_out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out-dir {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # before quantizing, not after
            pass
    except OSError as exc:
        raise UsageError(f"--out-dir {path}: cannot write there ({exc.strerror})") from None
    return path


def check(settings: VariantsSettings, maker: ModuleType) -> list[str]:
    """Usage errors first, before any model is loaded: inside a variant's row they would read as its failure.
    Returns the kinds of variant to make."""
    settings.run.validate()
    settings.budgets.validate()
    if settings.prune is not None:
        from edgebench.agent.optimize.prune import check_fraction, unavailable_reason

        check_fraction(settings.prune)
        reason = unavailable_reason(maker.FORMAT)
        if reason:
            raise UsageError(f"--prune: {reason}")
    parse_shapes(settings.shape)
    parse_sources(settings.input)
    if maker.FORMAT == GGUF:
        check_language_model(settings)
    elif settings.generation is not None:
        raise UsageError("--prompt-tokens and --gen-tokens are for language models (GGUF)")
    kinds = list(settings.only or maker.KINDS)
    unknown = sorted(set(kinds) - set(maker.KINDS))
    if unknown:
        raise UsageError(f"--only: unknown variant(s) {', '.join(unknown)} for a {maker.FORMAT} model; choose from "
                         f"{', '.join(maker.KINDS)}")
    return [kind for kind in maker.KINDS if kind in kinds]


def check_language_model(settings: VariantsSettings) -> None:
    """A GGUF model's variants are quantization types, benchmarked as generations and compared on a fixed text: the
    options about tensor inputs, calibration and labelled data have nothing to act on."""
    given = [flag for flag, value in (("--shape", settings.shape), ("--input", settings.input),
                                      ("--calibration", settings.calibration), ("--eval", settings.eval_data),
                                      ("--drift-data", settings.drift_data), ("--prune", settings.prune))
             if value]
    if given:
        raise UsageError(f"{', '.join(given)}: not for a GGUF language model (its variants are llama.cpp "
                         "quantization types, compared on a fixed real text: docs/variants.md)")


def source_model(settings: VariantsSettings) -> tuple[Optional[ModelFile], ModuleType]:
    """The model file and its maker; for ``package.module:factory`` (a PyTorch module, exported first) no file yet."""
    from edgebench.agent.optimize.makers import torch_variants

    if torch_variants.is_factory(settings.model):
        return None, torch_variants
    model = identify(settings.model)
    return model, maker_for(model.format)


def default_out_dir(settings: VariantsSettings, model: Optional[ModelFile]) -> Path:
    """MODEL.variants/ next to the model; for a module factory, ``package.module.factory.variants/`` here."""
    if settings.out_dir:
        return Path(settings.out_dir)
    if model is None:
        return Path(settings.model.replace(":", ".") + ".variants")
    return model.path.with_name(model.path.stem + ".variants")


def export_module(settings: VariantsSettings, maker: ModuleType, out_dir: Path) -> tuple[VariantsSettings, list]:
    """``package.module:factory``: the module exported to ``out_dir/factory.pt2`` with --shape/--input as its example
    inputs, and the settings that go on from that file (its shapes are static: --shape/--input are spent)."""
    target = out_dir / (settings.model.rpartition(":")[2] + ".pt2")
    notes = maker.export_factory(settings.model, parse_shapes(settings.shape), parse_sources(settings.input),
                                 settings.seed, target)
    return replace(settings, model=str(target), shape=(), input=()), notes


def run(settings: VariantsSettings, progress: Optional[Callable] = None) -> tuple[dict, str]:
    """Make, benchmark and compare the variants: the report (schema edgebench.variants/2) and its table.
    ``progress``: the engine's progress callback (phase, runs, seconds), also told each making step."""
    model, maker = source_model(settings)
    kinds = check(settings, maker)
    options = runtime_options(settings, maker)
    maker.check_installed()

    def step(what: str) -> None:
        log.info("%s: %s", Path(settings.model).name, what)
        if progress:
            progress(what, 0, 0.0)

    out_dir = make_out_dir(default_out_dir(settings, model))
    source_notes: list[str] = []
    if model is None:
        step(f"exporting {settings.model} with torch.export")
        settings, source_notes = export_module(settings, maker, out_dir)
        model = identify(settings.model)
    limits = ChildLimits(timeout_s=settings.timeout_s or compare.DEFAULT_TIMEOUT_S, rss_interval_s=None)
    describe = getattr(maker, "describe", None)  # a source that is not itself runnable (a .pt2) describes itself
    base = compare.ModelRun(str(model.path), maker.RUNTIME, options)
    if describe is None:
        load_float(base, limits, step)
        inputs, outputs = base.inputs, base.outputs
    else:
        inputs, outputs = describe(model.path)
    input_sets: list[dict] = []
    calibration = None
    if set(kinds) & set(maker.CALIBRATED):  # bad calibration data fails before any quantizing
        input_sets, calibration = calibration_sets(inputs, settings)
    real_sets, drift_on = drift_sets(inputs, settings)
    check_eval(inputs, outputs, settings)
    rows = maker.produce_all(model.path, kinds, out_dir, input_sets, step)
    rows[0].notes[:0] = source_notes
    if describe is not None:  # the float model the variants are compared against is the one just made
        base = compare.ModelRun(str(rows[0].path), maker.RUNTIME, options)
        load_float(base, limits, step)
    if settings.prune is not None:
        step(f"pruning {settings.prune:.0%} of each weight tensor")
        rows.append(make_pruned(rows[0], out_dir, settings.prune, maker))
        _compress_all(rows)
    step("benchmarking " + ", ".join(row.name for row in rows if not row.error) + ", repeats interleaved")
    bench_variants(rows, settings, maker.RUNTIME, options, progress)
    if rows[0].report is None:
        raise ModelError(f"the float model itself failed: {rows[0].error}")
    if maker.FORMAT == GGUF:
        llm_drift.measure(rows, maker.RUNTIME, options, limits, step)
    else:
        measure_drift(base, rows, settings, limits, step, real_sets)
    advice = recommend.recommend(rows, settings.budgets)
    document = {"schema": SCHEMA, "created": utc_now(), "model": model.to_dict(), "calibration": calibration,
                "drift_data": drift_on, "variants": [row.to_dict() for row in rows], "recommendation": advice}
    if maker.FORMAT == GGUF:
        return document, llm_drift.render(model.path.name, rows, advice)
    return document, render(model.path.name, rows, calibration, advice, drift_on)


def load_float(base: compare.ModelRun, limits: ChildLimits, step: Callable[[str], None]) -> None:
    """Describe the float model in a child: a model the runtime cannot load (a custom op) fails here, before any
    quantizing or benchmarking."""
    step("loading the float model")
    try:
        compare.prepare(base, limits)
    except EdgebenchError as exc:
        raise type(exc)(f"loading the float model: {exc}") from None
