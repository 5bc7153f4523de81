"""``ModelSpec``: a model and what edgesplit needs to know about it.

Every model the partitioner takes (the early-exit CNN, the torchvision zoo, a
user's factory) is described by one: the module (in eval mode), its input
shape without the batch axis, and the names of its outputs, the final output
first and then the early exits in depth order.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgesplit.errors import ModelError

FINAL_OUTPUT = "logits"
"""Name of a model's final output, always the first one."""


@dataclass(frozen=True)
class ModelSpec:
    """A model and what edgesplit needs to know about it.

    Attributes:
        name: Short name, used in file names and reports.
        module: The model, put in eval mode when the spec is made.
        input_shape: Shape of one input without the batch axis, e.g. ``(1, 32, 32)``.
        output_names: Names of the outputs in the order ``forward`` returns them:
            the final output first, then the early exits in depth order.
        exit_names: The early-exit outputs among ``output_names``, in depth order;
            empty for a model without early exits.
        class_names: Label of each class index, if known.
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_names: tuple[str, ...]
    exit_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise ModelError(
                f"model {self.name!r}: module must be a torch.nn.Module, "
                f"got type={type(self.module).__name__}"
            )
        if not self.input_shape or any(
            not isinstance(size, int) or size <= 0 for size in self.input_shape
        ):
            raise ModelError(
                f"model {self.name!r}: input_shape={self.input_shape!r} must be positive ints "
                "without the batch axis, e.g. (3, 224, 224)"
            )
        if not self.output_names or len(set(self.output_names)) != len(self.output_names):
            raise ModelError(
                f"model {self.name!r}: output_names={self.output_names!r} must be non-empty "
                "and unique"
            )
        expected_exits = self.output_names[1 : 1 + len(self.exit_names)]
        if self.exit_names and tuple(self.exit_names) != expected_exits:
            raise ModelError(
                f"model {self.name!r}: exit_names={self.exit_names!r} must follow the final "
                f"output in output_names={self.output_names!r}"
            )
        self.module.eval()


__all__ = ["FINAL_OUTPUT", "ModelSpec"]
