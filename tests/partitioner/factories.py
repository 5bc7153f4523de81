"""Model factories that tests load through ``tests.partitioner.factories:<name>``."""

from __future__ import annotations

import torch
from torch import nn

from partitioner.models import ModelSpec

TINY_SHAPE = (1, 8, 8)


class _TwoExits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.exit = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(x)
        return self.head(h), self.exit(h)


def tiny() -> nn.Module:
    """A bare module with one output; needs an input shape of (1, 8, 8)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)
        )


def tiny_with_exit() -> nn.Module:
    """A bare module returning (final, exit)."""
    return _TwoExits()


def tiny_spec() -> ModelSpec:
    """A factory that returns a full ModelSpec."""
    return ModelSpec(
        name="tiny-spec",
        module=_TwoExits(),
        input_shape=TINY_SHAPE,
        output_names=("logits", "exit_1"),
        exit_names=("exit_1",),
        class_names=("a", "b", "c"),
    )


def returns_string() -> str:
    return "not a model"


def returns_dict_output() -> nn.Module:
    class _Dict(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": x}

    return _Dict()


NOT_CALLABLE = 42
