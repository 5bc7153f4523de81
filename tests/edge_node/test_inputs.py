"""Edge inputs from real files: the test set, .npy arrays, images, a video; and their errors."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
from PIL import Image

from edge_node.inputs import (
    FrameStream,
    InputSet,
    InputSource,
    load_inputs,
    open_inputs,
)
from edgesplit.bundle import Bundle, Manifest, TensorSpec
from edgesplit.errors import ConfigError

cv2 = pytest.importorskip("cv2")

RGB = (3, 8, 12)  # (C, H, W) of the stand-in model


def _bundle(root: Path, shape: tuple[int, ...] = RGB) -> Bundle:
    """A bundle whose manifest says only what the inputs need: the model's input spec."""
    manifest = SimpleNamespace(model=SimpleNamespace(input=TensorSpec("input", shape)))
    return Bundle(root, cast(Manifest, manifest))


def _solid(path: Path, color: tuple[int, int, int] | int, mode: str = "RGB") -> None:
    Image.new(mode, (40, 30), color).save(path)


def _all(inputs: InputSource) -> np.ndarray:
    return np.concatenate(list(inputs.batches()))


def test_images_in_file_name_order_as_the_models_input(tmp_path: Path) -> None:
    _solid(tmp_path / "b.png", (255, 0, 0))
    _solid(tmp_path / "a.jpg", (0, 0, 0))
    _solid(tmp_path / "c.BMP", (0, 0, 255))
    _solid(tmp_path / "d.jpeg", 255, mode="L")  # gray image, RGB model: three equal channels
    (tmp_path / "notes.txt").write_text("not an input")

    data = load_inputs(str(tmp_path), _bundle(tmp_path / "bundle"))

    assert data.inputs.shape == (4, *RGB) and data.inputs.dtype == np.float32
    assert data.labels is None and len(data) == data.count == 4
    assert 0.0 <= data.inputs.min() and data.inputs.max() <= 1.0
    means = data.inputs.mean(axis=(2, 3))  # [N, C]
    np.testing.assert_allclose(means[0], [0, 0, 0], atol=0.02)  # a.jpg: black
    np.testing.assert_allclose(means[1], [1, 0, 0], atol=1e-6)  # b.png: red, lossless
    np.testing.assert_allclose(means[2], [0, 0, 1], atol=1e-6)  # c.BMP: blue
    np.testing.assert_allclose(means[3], [1, 1, 1], atol=0.02)  # d.jpeg: white
    assert "4 image files" in data.source
    assert [b.shape for b in data.batches()] == [(1, *RGB)] * 4


def test_grayscale_model_converts_rgb_images(tmp_path: Path) -> None:
    _solid(tmp_path / "red.png", (255, 0, 0))
    data = load_inputs(str(tmp_path), _bundle(tmp_path, (1, 32, 32)))
    assert data.inputs.shape == (1, 1, 32, 32)
    # ITU-R 601 luma of pure red: 0.299 * 255 = 76 -> 76 / 255
    np.testing.assert_allclose(data.inputs, 76 / 255, atol=1e-6)


def test_mixed_folder_of_npy_and_images_with_a_limit(tmp_path: Path) -> None:
    np.save(tmp_path / "0001.npy", np.full((1, *RGB), 0.25, dtype=np.float32))  # batch of one
    _solid(tmp_path / "0002.png", (0, 255, 0))
    np.save(tmp_path / "0003.npy", np.full(RGB, -1.0))  # float64, pre-normalized: kept as is
    _solid(tmp_path / "0004.png", (0, 0, 0))

    data = load_inputs(str(tmp_path), _bundle(tmp_path), limit=3)

    assert data.inputs.shape == (3, *RGB)
    np.testing.assert_allclose(data.inputs[0], 0.25)
    np.testing.assert_allclose(data.inputs[1].mean(axis=(1, 2)), [0, 1, 0])
    np.testing.assert_allclose(data.inputs[2], -1.0)
    assert "2 .npy, 1 image files" in data.source


def test_the_bundles_test_set_with_labels(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    inputs = np.arange(5 * 288, dtype=np.float32).reshape(5, *RGB)
    np.savez(tmp_path / "data" / "test.npz", inputs=inputs, labels=np.arange(5))
    data = load_inputs("bundle", _bundle(tmp_path), limit=3)
    np.testing.assert_array_equal(data.inputs, inputs[:3])
    assert data.labels is not None and data.labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("content", [b"definitely not a png", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_a_corrupt_image_is_named(tmp_path: Path, content: bytes) -> None:
    _solid(tmp_path / "a.png", (1, 2, 3))
    (tmp_path / "b.png").write_bytes(content)
    with pytest.raises(ConfigError, match=r"b\.png: cannot be decoded as an image"):
        load_inputs(str(tmp_path), _bundle(tmp_path))


def test_a_truncated_image_is_named(tmp_path: Path) -> None:
    _solid(tmp_path / "whole.png", (1, 2, 3))
    Image.effect_noise((64, 64), 50).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"cut\.png: cannot be decoded as an image"):
        load_inputs(str(tmp_path), _bundle(tmp_path))


def test_images_need_an_image_shaped_model(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(ConfigError, match=r"a\.png: images feed models of input shape"):
        load_inputs(str(tmp_path), _bundle(tmp_path, (4, 8, 8)))


def test_npy_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"x\.npy: shape \(2, 2\), the model takes \(3, 8, 12\)"):
        load_inputs(str(tmp_path), _bundle(tmp_path))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/nonexistent", "--inputs /nonexistent: not 'bundle' and not an .npz, a directory"),
        ("/nonexistent/clip.mp4", "(no such path)"),
        ("camera:front", "expected camera:N with N a camera index"),
        ("bundle", "this bundle ships no test set"),
    ],
)
def test_spec_errors(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_inputs(spec, _bundle(tmp_path))
    assert message in str(info.value)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("")
    with pytest.raises(ConfigError, match="no .npy or image"):
        load_inputs(str(tmp_path), _bundle(tmp_path))


# BGR colors, as OpenCV writes them, and the RGB means they should read back as.
FRAMES = [((0, 0, 255), (1, 0, 0)), ((0, 255, 0), (0, 1, 0)), ((255, 0, 0), (0, 0, 1))] * 2


def _write_video(path: Path, frames: int = len(FRAMES)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 32))
    assert writer.isOpened()
    for bgr, _ in FRAMES[:frames]:
        writer.write(np.full((32, 48, 3), bgr, dtype=np.uint8))
    writer.release()


def test_video_frames_stream_lazily_as_the_models_input(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    _write_video(clip)

    stream = open_inputs(str(clip), _bundle(tmp_path), limit=4)

    assert isinstance(stream, FrameStream)
    assert stream.count == 4 and stream.labels is None and str(clip) in stream.source
    batches = stream.batches()
    first = next(batches)  # decoded on demand
    assert first.shape == (1, *RGB) and first.dtype == np.float32
    frames = np.concatenate([first, *batches])
    assert frames.shape == (4, *RGB)
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    expected = np.array([rgb for _, rgb in FRAMES[:4]], dtype=np.float32)
    np.testing.assert_allclose(frames.mean(axis=(2, 3)), expected, atol=0.05)  # JPEG-compressed
    # A stream can be read again: each batches() reopens the file.
    assert _all(stream).shape == (4, *RGB)


def test_video_to_an_input_set(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    _write_video(clip)
    data = load_inputs(str(clip), _bundle(tmp_path, (1, 16, 16)))
    assert isinstance(data, InputSet)
    assert data.inputs.shape == (len(FRAMES), 1, 16, 16) and data.labels is None
    assert open_inputs(str(clip), _bundle(tmp_path)).count == len(FRAMES)


def test_not_a_video(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"this is text, not a video" * 100)
    with pytest.raises(ConfigError, match=r"clip\.mp4: cannot be opened as a video"):
        open_inputs(str(clip), _bundle(tmp_path))


def test_a_video_without_opencv_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = tmp_path / "clip.avi"
    _write_video(clip, frames=1)
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail, as uninstalled
    with pytest.raises(ConfigError, match=r"pip install 'edgesplit\[video\]'"):
        open_inputs(str(clip), _bundle(tmp_path))


def test_a_camera_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"camera 97: cannot be opened \(no such camera"):
        open_inputs("camera:97", _bundle(tmp_path))
