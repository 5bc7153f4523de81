"""Where the edge's inputs come from: the bundle's test set, files, a video or a camera.

An input spec (``--inputs``, ``[edge] inputs``) is one of:

- ``bundle``: the bundle's test set (``data/test.npz``), with its labels;
- a directory of ``.npy`` arrays and images (png, jpg, jpeg, bmp), one input
  a file, in file-name order (sorted as strings: name them ``0001.png``...);
- a video file (``.mp4``, ``.avi``, ``.mkv``, ``.mov``): its frames, read lazily;
- ``camera:N``: frames from camera ``N``, until ``limit`` or the camera stops.

Video files and cameras need OpenCV (``pip install 'edgesplit[video]'``).

Images and frames become the model's input ``(C, H, W)``: resized (stretched,
bilinear) to ``H x W``, grayscale when ``C == 1`` or RGB when ``C == 3``, scaled
to ``[0, 1]`` float32. The manifest records no input normalization (mean, std),
so none is applied: a model trained on normalized inputs is fed ``[0, 1]``
pixels, and a ``.npy`` folder is the way to feed it pre-normalized arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from PIL import Image

from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError, ModelError
from edgesplit.feeds import batch_of, check_feeds, read_npz, slice_feeds

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
CAMERA_PREFIX = "camera:"
VIDEO_EXTRA = "OpenCV is not installed; pip install 'edgesplit[video]'"


class InputSource(Protocol):
    """Anything the edge classifies: batch-of-one requests, labels when known."""

    @property
    def labels(self) -> np.ndarray | None:
        """One label per input, or None (files, videos and cameras have none)."""
        ...

    @property
    def source(self) -> str:
        """Where the inputs come from, for the start-up report."""
        ...

    @property
    def count(self) -> int | None:
        """How many batches :meth:`batches` yields; None when not known (a camera)."""
        ...

    def batches(self) -> Iterator[np.ndarray | dict[str, np.ndarray]]:
        """One batch-of-one request per input: an array, or one array per input name."""
        ...


@dataclass(frozen=True)
class InputSet:
    """Inputs held in memory and their labels when known.

    Attributes:
        inputs: ``[N, *shape]`` for a single-input model, or one such array per
            input name (a model of several inputs, or an ``.npz``).
    """

    inputs: np.ndarray | dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        if isinstance(self.inputs, dict):
            return batch_of(self.inputs)
        return int(self.inputs.shape[0])

    @property
    def count(self) -> int:
        """The number of inputs (``len``)."""
        return len(self)

    def batches(self) -> Iterator[np.ndarray | dict[str, np.ndarray]]:
        """One batch-of-one request per input."""
        for i in range(len(self)):
            if isinstance(self.inputs, dict):
                yield slice_feeds(self.inputs, i, i + 1)
            else:
                yield self.inputs[i : i + 1]


@dataclass(frozen=True)
class FrameStream:
    """Frames of a video file or a camera, decoded lazily as the edge consumes them.

    Attributes:
        device: the video's path, or the camera's index.
        shape: the model's input ``(C, H, W)``.
        limit: the most frames read; None reads the video to its end (or the
            camera until it stops).
        source: a description for the start-up report.
        count: frames :meth:`batches` will yield, from the container's frame
            count (an estimate for some formats); None for an endless camera.
    """

    device: str | int
    shape: tuple[int, ...]
    limit: int | None
    source: str
    count: int | None

    @property
    def labels(self) -> None:
        """Frames carry no labels."""
        return None

    def batches(self) -> Iterator[np.ndarray | dict[str, np.ndarray]]:
        """Open the device, yield each frame as a ``[1, C, H, W]`` request, release it.

        Raises:
            ConfigError: the device cannot be opened, or gives no frame at all.
        """
        capture = _open_capture(_cv2(), self.device, self.source)
        read = 0
        try:
            while self.limit is None or read < self.limit:
                ok, frame = capture.read()
                if not ok:
                    break
                yield frame_to_input(frame, self.shape)[None]
                read += 1
        finally:
            capture.release()
        if read == 0:
            raise ConfigError(f"{self.source}: no frames could be read")

    def load(self) -> InputSet:
        """Every frame in memory (up to ``limit``), for callers that need an InputSet.

        Raises:
            ConfigError: an endless camera without a limit, or no frames.
        """
        if self.limit is None and isinstance(self.device, int):
            raise ConfigError(f"{self.source}: a camera never ends; give --samples N")
        frames = np.concatenate(list(self.batches()))
        return InputSet(frames, None, f"{self.source} ({len(frames)} frames)")


def open_inputs(spec: str, bundle: Bundle, limit: int | None = None) -> InputSet | FrameStream:
    """The inputs ``spec`` names: in memory for ``bundle`` and folders, a stream otherwise.

    Raises:
        ConfigError: a missing path, a spec of no known kind, an unreadable file
            (named), OpenCV missing for a video or camera, a video or camera that
            cannot be opened or gives no frames.
    """
    path = Path(spec)
    if path.suffix.lower() == ".npz" and spec != "bundle":
        return load_npz_inputs(path, bundle, limit)
    shape = tuple(bundle.manifest.model.input.shape)
    if spec == "bundle":
        return _load_test_set(bundle, shape, limit)
    if spec.startswith(CAMERA_PREFIX):
        return _open_camera(spec, shape, limit)
    path = Path(spec)
    if path.is_dir():
        return _load_folder(path, shape, limit)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return _open_video(path, shape, limit)
    kinds = f"an .npz, a directory, a video file ({', '.join(VIDEO_SUFFIXES)}) or camera:N"
    if not path.exists():
        raise ConfigError(f"--inputs {spec}: not 'bundle' and not {kinds} (no such path)")
    raise ConfigError(f"--inputs {spec}: not 'bundle' and not {kinds}")


def load_inputs(spec: str, bundle: Bundle, limit: int | None = None) -> InputSet:
    """The inputs ``spec`` names, all in memory (a video's frames decoded up front).

    Raises:
        ConfigError: as :func:`open_inputs`; also a camera without ``limit``.
    """
    inputs = open_inputs(spec, bundle, limit)
    return inputs.load() if isinstance(inputs, FrameStream) else inputs


def load_npz_inputs(path: Path, bundle: Bundle, limit: int | None = None) -> InputSet:
    """An ``.npz`` with one array per input name (batch first), and ``labels`` if it has them.

    Raises:
        ConfigError: unreadable, a missing input name, a wrong dtype or shape.
    """
    if not path.is_file():
        raise ConfigError(f"--inputs {path}: no such file")
    specs = bundle.manifest.model.inputs
    try:
        arrays = read_npz(path, f"--inputs {path}", limit)
        labels = arrays.pop("labels", None)
        feeds = check_feeds(arrays, specs, f"--inputs {path}")
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    count = batch_of(feeds)
    if labels is not None and len(labels) != count:
        raise ConfigError(f"--inputs {path}: {len(labels)} labels for {count} inputs")
    source = f"{path} ({count} samples, inputs {', '.join(feeds)})"
    if len(specs) == 1:
        return InputSet(feeds[specs[0].name], labels, source)
    return InputSet(feeds, labels, source)


def _load_test_set(bundle: Bundle, shape: tuple[int, ...], limit: int | None) -> InputSet:
    path = bundle.root / "data" / "test.npz"
    if not path.is_file():
        raise ConfigError(f"{bundle.root}: this bundle ships no test set; give --inputs DIR")
    with np.load(path) as data:
        inputs, labels = data["inputs"][:limit], data["labels"][:limit]
    source = f"{path} ({len(labels)} samples)"
    if inputs.shape[1:] != shape:
        raise ConfigError(f"{source}: inputs of shape {inputs.shape[1:]}, the model takes {shape}")
    return InputSet(np.ascontiguousarray(inputs, dtype=np.float32), labels, source)


def _load_folder(folder: Path, shape: tuple[int, ...], limit: int | None) -> InputSet:
    files = sorted(
        f for f in folder.iterdir() if f.suffix.lower() in (".npy", *IMAGE_SUFFIXES) and f.is_file()
    )
    if not files:
        raise ConfigError(
            f"--inputs {folder}: no .npy or image ({', '.join(IMAGE_SUFFIXES)}) files "
            "in this directory"
        )
    files = files[:limit]
    arrays = [
        _load_npy(f, shape) if f.suffix.lower() == ".npy" else _load_image(f, shape) for f in files
    ]
    npy = sum(f.suffix.lower() == ".npy" for f in files)
    kinds = ", ".join(
        f"{n} {what}" for n, what in ((npy, ".npy"), (len(files) - npy, "image")) if n
    )
    return InputSet(np.stack(arrays), None, f"{folder} ({kinds} files)")


def _load_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        value = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as a .npy array: {exc}") from exc
    if value.shape == (1, *shape):
        value = value[0]
    if value.shape != shape:
        raise ConfigError(f"{path}: shape {value.shape}, the model takes {shape}")
    return value


def _load_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_input(image, shape, str(path))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"{path}: cannot be decoded as an image: {exc}") from exc


def image_to_input(image: Image.Image, shape: tuple[int, ...], where: str = "image") -> np.ndarray:
    """An image as the model's input ``(C, H, W)``: resized, gray or RGB, float32 in [0, 1].

    Raises:
        ConfigError: the model's input is not ``(1, H, W)`` or ``(3, H, W)``.
    """
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(
            f"{where}: images feed models of input shape (1, H, W) or (3, H, W); "
            f"this model takes {shape}"
        )
    channels, height, width = shape
    converted = image.convert("L" if channels == 1 else "RGB")
    resized = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def frame_to_input(frame: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An OpenCV frame (BGR ``[H, W, 3]`` or gray ``[H, W]`` uint8) as the model's input."""
    rgb = frame if frame.ndim == 2 else np.ascontiguousarray(frame[..., 2::-1])
    return image_to_input(Image.fromarray(rgb), shape, "frame")


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError:
        raise ConfigError(VIDEO_EXTRA) from None
    return cv2


def _open_capture(cv2: ModuleType, device: str | int, source: str) -> Any:
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        capture.release()
        why = (
            "cannot be opened (no such camera, or it is busy)"
            if isinstance(device, int)
            else "cannot be opened as a video (not a video, or no codec for it)"
        )
        raise ConfigError(f"{source}: {why}")
    return capture


def _probe(cv2: ModuleType, device: str | int, source: str) -> int | None:
    """Check that ``device`` opens and gives a frame; its frame count when it has one."""
    capture = _open_capture(cv2, device, source)
    try:
        ok, _ = capture.read()
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if not ok:
        raise ConfigError(f"{source}: no frames could be read")
    return frames if frames > 0 else None


def _open_video(path: Path, shape: tuple[int, ...], limit: int | None) -> FrameStream:
    cv2 = _cv2()
    source = f"video {path}"
    frames = _probe(cv2, str(path), source)
    count = frames if limit is None or frames is None else min(frames, limit)
    return FrameStream(str(path), shape, limit, source, count)


def _open_camera(spec: str, shape: tuple[int, ...], limit: int | None) -> FrameStream:
    index = spec[len(CAMERA_PREFIX) :]
    if not index.isdigit():
        raise ConfigError(
            f"--inputs {spec}: expected camera:N with N a camera index, like camera:0"
        )
    cv2 = _cv2()
    source = f"camera {int(index)}"
    _probe(cv2, int(index), source)
    return FrameStream(int(index), shape, limit, source, limit)


__all__ = [
    "FrameStream",
    "InputSet",
    "InputSource",
    "frame_to_input",
    "image_to_input",
    "load_inputs",
    "open_inputs",
]
