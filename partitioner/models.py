"""The models edgesplit partitions: an early-exit CNN, a torchvision zoo, user factories.

Every model is described by a ``ModelSpec``: the module (in eval mode), its input
shape without the batch axis, and the names of its outputs, the final output first
and then the early exits in depth order. ``build_model`` builds a zoo model by name;
``load_factory`` calls a user's ``package.module:factory``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgesplit.errors import ModelError
from partitioner.datasets import CLASS_NAMES, INPUT_SHAPE

FINAL_OUTPUT = "logits"
"""Name of a model's final output, always the first one."""

IMAGENET_SHAPE: tuple[int, int, int] = (3, 224, 224)
"""Input shape of the torchvision zoo models without the batch axis."""


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


def _trained_branchynet(seed: int) -> ModelSpec:
    # Imported here: training imports this module for EarlyExitCNN.
    from partitioner.training import default_cache_dir, train_branchynet

    result = train_branchynet(default_cache_dir(), seed=seed)
    module = new_branchynet(seed)
    module.load_state_dict(torch.load(result.weights_path, map_location="cpu", weights_only=True))
    return branchynet_spec(module)


def _untrained_branchynet(seed: int) -> ModelSpec:
    return branchynet_spec(new_branchynet(seed), name="branchynet-untrained")


def calibrate_batch_norm(module: nn.Module, input_shape: tuple[int, ...], seed: int) -> None:
    """Give every batch norm the statistics of one random batch, then switch to eval.

    With torchvision's initialisation and the default running statistics,
    random-weight GoogLeNet and MobileNetV2 produce outputs that do not depend
    on the input (logits ~1e-9): their activations vanish layer by layer, which
    makes codec sizes meaningless and equivalence checks toothless. Statistics
    from real (random) activations keep every layer at unit scale.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        module.eval()
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches seen: here, one
    generator = torch.Generator().manual_seed(seed)
    module.train()
    with torch.no_grad():
        module(torch.randn((8, *input_shape), generator=generator))
    module.eval()


def _torchvision(name: str, **options: object) -> Callable[[int], ModelSpec]:
    """A builder of torchvision's ``name`` with random weights and keyword ``options``."""

    def build(seed: int) -> ModelSpec:
        from torchvision import models  # imported on use: it is slow to import

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = getattr(models, name)(weights=None, **options)
            calibrate_batch_norm(module, IMAGENET_SHAPE, seed + 1)
        return ModelSpec(
            name=name, module=module, input_shape=IMAGENET_SHAPE, output_names=(FINAL_OUTPUT,)
        )

    return build


_ZOO: dict[str, Callable[[int], ModelSpec]] = {
    "branchynet": _trained_branchynet,
    "branchynet-untrained": _untrained_branchynet,
    "alexnet": _torchvision("alexnet"),
    "vgg16": _torchvision("vgg16"),
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    # Without aux_logits, eval and training both return the logits alone; with
    # weights=None, transform_input stays off, so the graph starts at conv1.
    # init_weights=True is torchvision's default, named to silence its warning.
    "googlenet": _torchvision("googlenet", aux_logits=False, init_weights=True),
    "densenet121": _torchvision("densenet121"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_ZOO)
"""Names ``build_model`` knows."""


def build_model(name: str, *, seed: int = 0) -> ModelSpec:
    """Build a zoo model by name.

    ``branchynet`` is the ``EarlyExitCNN`` trained on the digits task (trained and
    cached on first use, see ``partitioner.training``); ``branchynet-untrained`` has
    random weights. The torchvision models have random weights (nothing is
    downloaded), a 3x224x224 input and one output, ``logits``.

    Args:
        name: One of ``MODEL_NAMES``.
        seed: Seed of the random initialization (and of training, for ``branchynet``).

    Returns:
        The model's spec, module in eval mode.

    Raises:
        ModelError: If ``name`` is not in ``MODEL_NAMES``.
    """
    builder = _ZOO.get(name)
    if builder is None:
        raise ModelError(f"unknown model name={name!r}; known models: {', '.join(MODEL_NAMES)}")
    return builder(seed)


def load_factory(spec: str, input_shape: tuple[int, ...] | None = None) -> ModelSpec:
    """Build a model from a ``package.module:factory`` reference.

    The factory is called with no arguments and returns either a ``ModelSpec`` or
    an ``nn.Module``. For a module, ``input_shape`` is required; the outputs are
    found by running it once on zeros: a tensor is named ``logits``, a tuple of
    k tensors ``logits, exit_1, ..., exit_{k-1}`` (final output first).

    Args:
        spec: ``package.module:factory``, with the module importable from ``sys.path``.
        input_shape: Input shape without the batch axis; required when the factory
            returns a module, and when given must match a returned spec's.

    Returns:
        The model's spec, module in eval mode.

    Raises:
        ModelError: If the reference is malformed, the module cannot be imported,
            the factory is missing, not callable, or returns something else.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ModelError(
            f"model factory {spec!r} is not of the form 'package.module:factory', "
            "e.g. 'mypkg.models:build'"
        )
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        raise ModelError(
            f"model factory {spec!r}: cannot import module {module_name!r} ({exc}); "
            "check that it is installed or on PYTHONPATH"
        ) from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModelError(
            f"model factory {spec!r}: module {module_name!r} has no attribute {attr!r}"
        )
    if not callable(factory):
        raise ModelError(
            f"model factory {spec!r}: {attr!r} is a {type(factory).__name__}, not callable"
        )
    built = factory()
    if isinstance(built, ModelSpec):
        if input_shape is not None and tuple(input_shape) != built.input_shape:
            raise ModelError(
                f"model factory {spec!r}: input_shape={tuple(input_shape)} does not match "
                f"the returned spec's input_shape={built.input_shape}"
            )
        return built
    if not isinstance(built, nn.Module):
        raise ModelError(
            f"model factory {spec!r} returned a {type(built).__name__}; expected a "
            "torch.nn.Module or a partitioner.models.ModelSpec"
        )
    if input_shape is None:
        raise ModelError(
            f"model factory {spec!r} returned a bare nn.Module; give its input shape "
            "without the batch axis (e.g. --input-shape 3,224,224)"
        )
    shape = tuple(int(size) for size in input_shape)
    outputs = _probe_outputs(spec, built, shape)
    return ModelSpec(
        name=attr, module=built, input_shape=shape, output_names=outputs, exit_names=outputs[1:]
    )


def _probe_outputs(spec: str, module: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Name a module's outputs by running it once on a zero batch of one."""
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((1, *input_shape)))
    except RuntimeError as exc:
        raise ModelError(
            f"model factory {spec!r}: forward on input_shape={input_shape} failed: {exc}"
        ) from exc
    if isinstance(out, torch.Tensor):
        return (FINAL_OUTPUT,)
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return (FINAL_OUTPUT, *(f"exit_{i}" for i in range(1, len(out))))
    raise ModelError(
        f"model factory {spec!r}: forward returned {type(out).__name__}; expected a tensor "
        "or a tuple of tensors (final output first)"
    )


__all__ = [
    "BRANCHYNET_EXITS",
    "BRANCHYNET_OUTPUTS",
    "FINAL_OUTPUT",
    "IMAGENET_SHAPE",
    "MODEL_NAMES",
    "EarlyExitCNN",
    "ModelSpec",
    "branchynet_spec",
    "build_model",
    "load_factory",
    "new_branchynet",
]
