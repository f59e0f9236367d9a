"""PyTorch variants as ExecuTorch programs: a torch.export program (.pt2) lowered to XNNPACK as float32, and int8
by PT2E quantization (torchao's prepare_pt2e/convert_pt2e with ExecuTorch's XNNPACKQuantizer). Benchmarked by the
executorch runtime."""

from __future__ import annotations

from pathlib import Path

from edgebench.agent.errors import UsageError

RUNTIME = "executorch"
SUFFIX = ".pte"


def check_installed() -> None:
    try:
        import executorch.exir  # noqa: F401 - the lowering
        import torch  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"making PyTorch variants needs torch and executorch: pip install 'edgebench[torch-export]' "
                         f"({exc})") from None


def lower(exported, target: Path) -> None:
    """Lower a torch.export ExportedProgram to an ExecuTorch program with XNNPACK taking what it can."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    with open(target, "wb") as handle:
        program.write_to_file(handle)


def derive_fp32(source: Path, target: Path, name: str = "") -> None:
    """scripts/fetch_models.py's entry point: the float32 ExecuTorch program of a .pt2."""
    import torch

    check_installed()
    lower(torch.export.load(str(source)), target)
