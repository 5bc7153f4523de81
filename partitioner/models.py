"""The models edgesplit partitions: an early-exit CNN, a torchvision zoo, user factories.

Every model is described by a ``ModelSpec`` (:mod:`partitioner.model_spec`): the
module (in eval mode), its input shape without the batch axis, and the names of its
outputs, the final output first and then the early exits in depth order.
``build_model`` builds a zoo model by name (the early-exit CNN of
:mod:`partitioner.branchynet`, trained by :mod:`partitioner.training`, or a
torchvision model); ``load_factory`` calls a user's ``package.module:factory``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from edgesplit.errors import ModelError
from partitioner.branchynet import (
    BRANCHYNET_EXITS,
    BRANCHYNET_OUTPUTS,
    EarlyExitCNN,
    branchynet_spec,
    new_branchynet,
)
from partitioner.model_spec import FINAL_OUTPUT, ModelSpec
from partitioner.training import default_cache_dir, train_branchynet

IMAGENET_SHAPE: tuple[int, int, int] = (3, 224, 224)
"""Input shape of the torchvision zoo models without the batch axis."""


def _trained_branchynet(seed: int) -> ModelSpec:
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
