"""Small PyTorch modules for the tests of PyTorch variants, given to `edgebench variants` as
``tests.torch_nets:FACTORY`` (importable from the repository root, where the tests run the CLI)."""

from __future__ import annotations

import torch
from torch import nn


class ConvLinear(nn.Module):
    """A conv, a pooling and a linear layer: what the static and dynamic int8 quantizers both take."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.linear = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def conv_linear() -> nn.Module:
    torch.manual_seed(0)  # the same weights in every process: the exported program, the tests' expectations
    return ConvLinear()


NOT_A_FACTORY = 42


def not_a_module() -> str:
    return "a string"


def raises() -> nn.Module:
    raise RuntimeError("weights not found")


class DataDependent(nn.Module):
    """Control flow on a tensor's value: torch.export refuses it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


def data_dependent() -> nn.Module:
    return DataDependent()
