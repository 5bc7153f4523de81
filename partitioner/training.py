"""Deterministic training of the BranchyNet ``EarlyExitCNN`` on the digits task, cached.

Training minimizes the BranchyNet joint loss, a weighted sum of the cross-entropies
of the final output and of every exit, on CPU with deterministic kernels, a fixed
thread count and a seeded data order, so the same config gives the same weights.
The weights land in ``cache_dir / f"branchynet-{key}.pt"`` (``key`` hashes the
config, the model architecture and the data and training versions) with a JSON
sidecar holding the test accuracies, so a second call only reads two files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgesplit.errors import ModelError
from partitioner.atomic import atomic_output
from partitioner.branchynet import BRANCHYNET_OUTPUTS, EarlyExitCNN, new_branchynet
from partitioner.datasets import DATASET_VERSION, Split, load_digits_task

TRAINING_VERSION = 1
"""Bump when the training procedure changes, so cached weights are retrained."""

ProgressCallback = Callable[[int, int, dict[str, float]], None]
"""Called after each epoch as ``progress(epoch, epochs, metrics)``, epoch from 1."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (and so the cache key).

    Attributes:
        epochs: Passes over the training split.
        seed: Seed of the initialization, the data order and the augmentation.
        n_train: Training samples generated (``None``: the split's default size).
        batch_size: Samples per optimizer step.
        learning_rate: Peak Adam learning rate, decayed to zero on a cosine.
        weight_decay: Adam (L2) weight decay.
        loss_weights: Weight of each output's cross-entropy in the joint loss, in
            output order (final, exit_1, exit_2).
        threads: torch intra-op threads while training.
    """

    epochs: int
    seed: int = 0
    n_train: int | None = None
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    loss_weights: tuple[float, ...] = (1.0, 0.5, 0.5)
    threads: int = 2

    def cache_key(self) -> str:
        """Short sha256 of this config, the architecture and the versions."""
        payload = {
            "config": asdict(self),
            "architecture": repr(new_branchynet()),
            "training_version": TRAINING_VERSION,
            "dataset_version": DATASET_VERSION,
        }
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainResult:
    """What training produced.

    Attributes:
        weights_path: The cached ``state_dict`` of the ``EarlyExitCNN``.
        accuracy: Test-split accuracy of each output, keyed by output name.
        train_seconds: Wall-clock seconds the training took (on a cache hit, the
            seconds the original training took).
        cached: True when the weights came from the cache.
        config: The training config.
    """

    weights_path: Path
    accuracy: dict[str, float] = field(hash=False)
    train_seconds: float
    cached: bool
    config: TrainConfig


DEFAULT_EPOCHS = 6


def default_cache_dir() -> Path:
    """``$EDGESPLIT_CACHE`` if set, else ``~/.cache/edgesplit`` (read at call time)."""
    env = os.environ.get("EDGESPLIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgesplit"


def train_branchynet(
    cache_dir: Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    n_train: int | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train the BranchyNet ``EarlyExitCNN``, or load it from the cache.

    Args:
        cache_dir: Folder for the weights and their JSON sidecar (created if missing).
        epochs: Passes over the training split.
        seed: Seed of initialization, data order and augmentation.
        n_train: Training samples (``None``: the default 24000); fewer is for tests.
        progress: Called after each epoch with ``(epoch, epochs, metrics)``.

    Returns:
        The weights path, per-output test accuracy and training time.

    Raises:
        ModelError: If ``cache_dir`` cannot be created or written.
    """
    config = TrainConfig(epochs=epochs, seed=seed, n_train=n_train)
    key = config.cache_key()
    weights_path = Path(cache_dir) / f"branchynet-{key}.pt"
    sidecar_path = weights_path.with_suffix(".json")
    hit = _read_cache(weights_path, sidecar_path, config)
    if hit is not None:
        return hit

    try:
        weights_path.parent.mkdir(parents=True, exist_ok=True)  # fail before training
    except OSError as exc:
        raise _unwritable(weights_path, exc) from exc
    start = time.perf_counter()
    with _deterministic_torch(config.threads):
        model = _fit(config, progress)
        accuracy = evaluate(model, load_digits_task("test", seed=seed))
    train_seconds = time.perf_counter() - start

    sidecar = {
        "key": key,
        "accuracy": accuracy,
        "train_seconds": train_seconds,
        "config": asdict(config),
        "training_version": TRAINING_VERSION,
        "dataset_version": DATASET_VERSION,
    }
    try:
        with atomic_output(weights_path) as tmp:
            torch.save(model.state_dict(), tmp)
        with atomic_output(sidecar_path) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise _unwritable(weights_path, exc) from exc
    return TrainResult(weights_path, accuracy, train_seconds, cached=False, config=config)


def evaluate(model: nn.Module, split: Split, batch_size: int = 500) -> dict[str, float]:
    """Accuracy of each output of an ``EarlyExitCNN`` on a split.

    Returns:
        Fraction correct, keyed by output name (``logits``, ``exit_1``, ``exit_2``).
    """
    predictions = predict(model, split.images, batch_size)
    return {
        name: float(np.mean(pred == split.labels))
        for name, pred in zip(BRANCHYNET_OUTPUTS, predictions.argmax(-1), strict=True)
    }


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Softmax probabilities of every output: float32 [outputs, N, classes]."""
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            outputs = model(torch.from_numpy(images[start : start + batch_size]))
            chunks.append(torch.stack([out.softmax(-1) for out in outputs]))
    return torch.cat(chunks, dim=1).numpy()


def _fit(config: TrainConfig, progress: ProgressCallback | None) -> EarlyExitCNN:
    """Train a fresh model with the joint BranchyNet loss."""
    data = load_digits_task("train", n=config.n_train, seed=config.seed)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    model = new_branchynet(config.seed)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = -(-len(data) // config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + float(np.cos(np.pi * step / total_steps)))
    )
    weights = config.loss_weights
    order_rng = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(data), generator=order_rng)
        loss_sum = 0.0
        correct = 0
        for start in range(0, len(data), config.batch_size):
            batch = order[start : start + config.batch_size]
            x, y = images[batch], labels[batch]
            outputs = model(x)
            loss = sum(
                (
                    w * nn.functional.cross_entropy(out, y)
                    for w, out in zip(weights, outputs, strict=True)
                ),
                start=torch.zeros(()),
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(batch)
            correct += int((outputs[0].argmax(-1) == y).sum())
        if progress is not None:
            progress(
                epoch,
                config.epochs,
                {
                    "loss": loss_sum / len(data),
                    "train_accuracy": correct / len(data),
                    "learning_rate": float(schedule.get_last_lr()[0]),
                },
            )
    model.eval()
    return model


def _read_cache(weights_path: Path, sidecar_path: Path, config: TrainConfig) -> TrainResult | None:
    """The cached result, or None when either file is missing or the sidecar is unreadable."""
    if not (weights_path.is_file() and sidecar_path.is_file()):
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text())
        accuracy = {str(k): float(v) for k, v in sidecar["accuracy"].items()}
        train_seconds = float(sidecar["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged sidecar is rebuilt by training again
    return TrainResult(weights_path, accuracy, train_seconds, cached=True, config=config)


def _unwritable(weights_path: Path, exc: OSError) -> ModelError:
    return ModelError(
        f"cannot write trained weights to {weights_path}: {exc}; "
        "set EDGESPLIT_CACHE to a writable folder"
    )


@contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count, restored on exit."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        torch.set_num_threads(old_threads)


__all__ = [
    "DEFAULT_EPOCHS",
    "TRAINING_VERSION",
    "ProgressCallback",
    "TrainConfig",
    "TrainResult",
    "default_cache_dir",
    "evaluate",
    "predict",
    "train_branchynet",
]
