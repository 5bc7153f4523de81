"""The BranchyNet-style early-exit CNN: its architecture, seeded weights and spec.

Trained on the digits task by :mod:`partitioner.training`; built by name
(``branchynet``, ``branchynet-untrained``) in :mod:`partitioner.models`.
"""

from __future__ import annotations

import torch
from torch import nn

from partitioner.datasets import CLASS_NAMES, INPUT_SHAPE
from partitioner.model_spec import FINAL_OUTPUT, ModelSpec


class EarlyExitCNN(nn.Module):
    """A BranchyNet-style CNN for 1x32x32 images with two early exits.

    The backbone is three conv blocks (conv, batch norm, ReLU, 2x2 max pool) and a
    classifier; each block's output is a single tensor, so the exported graph can
    be cut after any block. Exit branches read a block's output and feed nothing
    back: ``exit_1`` (after block 1) pools hard and classifies linearly,
    ``exit_2`` (after block 2) adds a small conv. Both cost a small fraction of
    the backbone, and are less accurate than the final output.

    Args:
        num_classes: Number of classes.
        widths: Channels of the three conv blocks.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        c1, c2, c3 = widths
        self.block1 = _conv_block(INPUT_SHAPE[0], c1)  # 32x32 -> 16x16
        self.block2 = _conv_block(c1, c2)  # 16x16 -> 8x8
        self.block3 = _conv_block(c2, c3)  # 8x8 -> 4x4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )
        self.exit_1 = nn.Sequential(
            nn.AvgPool2d(4),  # 16x16 -> 4x4
            nn.Flatten(),
            nn.Linear(c1 * 4 * 4, num_classes),
        )
        self.exit_2 = nn.Sequential(
            nn.Conv2d(c2, c2, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(c2 * 4 * 4, num_classes),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classify a batch [N, 1, 32, 32].

        Returns:
            ``(logits, exit_1, exit_2)``: unnormalized class scores [N, num_classes]
            of the final classifier, then of the exits in depth order.
        """
        h1 = self.block1(x)
        exit_1 = self.exit_1(h1)
        h2 = self.block2(h1)
        exit_2 = self.exit_2(h2)
        h3 = self.block3(h2)
        logits = self.classifier(h3)
        return logits, exit_1, exit_2


BRANCHYNET_OUTPUTS: tuple[str, ...] = (FINAL_OUTPUT, "exit_1", "exit_2")
BRANCHYNET_EXITS: tuple[str, ...] = ("exit_1", "exit_2")


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def new_branchynet(seed: int = 0) -> EarlyExitCNN:
    """An ``EarlyExitCNN`` with seeded random weights (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EarlyExitCNN(num_classes=len(CLASS_NAMES))


def branchynet_spec(module: EarlyExitCNN, name: str = "branchynet") -> ModelSpec:
    """Wrap an ``EarlyExitCNN`` in its ``ModelSpec``."""
    return ModelSpec(
        name=name,
        module=module,
        input_shape=INPUT_SHAPE,
        output_names=BRANCHYNET_OUTPUTS,
        exit_names=BRANCHYNET_EXITS,
        class_names=CLASS_NAMES,
    )


__all__ = [
    "BRANCHYNET_EXITS",
    "BRANCHYNET_OUTPUTS",
    "EarlyExitCNN",
    "branchynet_spec",
    "new_branchynet",
]
