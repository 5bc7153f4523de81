"""The ingress reads the header first: kinds it does not serve are refused from it alone,
nothing is decompressed there, and every error after the header echoes the request's id."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import zstandard

import wire
import wire.codecs
import wire.envelope
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.server import CloudConfig, CloudNode
from edgesplit.bundle import Bundle
from edgesplit.errors import PayloadError
from wire.header import pack_header

BOMB_BYTES = 16 * 1024 * 1024


@pytest.fixture
def node(untrained_bundle: Bundle) -> Iterator[CloudNode]:
    """A node that is not listening: ``handle`` answers frames as the ingress would."""
    built = CloudNode(
        untrained_bundle, OnnxRuntimeBackend(untrained_bundle, threads=1), CloudConfig()
    )
    yield built
    built.queue.close()
    built.data.close()


@pytest.fixture
def no_decompression(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails any decompression or tensor decoding on the way; lists the attempts."""
    calls: list[str] = []

    def refuse(name: str):  # noqa: ANN202 - a spy
        def spy(*args: object, **kwargs: object) -> object:
            calls.append(name)
            raise AssertionError(f"{name} called on the ingress")

        return spy

    monkeypatch.setattr(wire.codecs, "_decompress", refuse("_decompress"))
    monkeypatch.setattr(wire.envelope, "decode_tensor", refuse("decode_tensor"))
    return calls


def _bomb(kind: str, name: str, request_id: int = 42) -> list[bytes]:
    """A ``kind`` frame whose one uint8 vector is a zstd frame expanding to 16 MB."""
    payload = zstandard.ZstdCompressor().compress(bytes(BOMB_BYTES))
    assert len(payload) < 2048
    meta = wire.TensorMeta(name, "uint8", (BOMB_BYTES,), "raw+zstd", len(payload))
    fields = {"offset": 0} if kind == "chunk" else {}
    return [pack_header(kind, request_id, fields, [meta]), payload]


def _error(reply: wire.Frames | None) -> wire.ErrorReply:
    assert reply is not None
    message = wire.decode(reply)
    assert isinstance(message, wire.ErrorReply), message
    return message


def _infer(bundle: Bundle, cut_id: str, request_id: int = 42) -> wire.Frames:
    cut = bundle.manifest.cuts[1]
    act = np.zeros((1, *cut.shape), dtype=cut.dtype)
    return wire.encode(
        wire.InferRequest(request_id, bundle.id, cut_id, (wire.Tensor(cut.name, act),))
    )


@pytest.mark.parametrize(("kind", "name"), [("chunk", "data"), ("report", "json")])
def test_a_kind_not_served_is_refused_from_its_header_without_decompressing(
    node: CloudNode, no_decompression: list[str], kind: str, name: str
) -> None:
    error = _error(node.handle(_bomb(kind, name), 0.0))
    assert (error.code, error.request_id) == ("kind", 42)
    assert no_decompression == []
    assert node.counts["error_kind"] == 1


def test_encoded_decoding_never_decompresses_a_chunk(no_decompression: list[str]) -> None:
    with pytest.raises(PayloadError, match="encoded=True"):
        wire.decode(_bomb("chunk", "data"), encoded=True)
    assert no_decompression == []
    # A raw chunk is kept as sent.
    chunk = wire.decode(wire.encode(wire.Chunk(3, 0, b"abc")), encoded=True)
    assert isinstance(chunk, wire.Chunk) and chunk.data == b"abc"


def test_read_envelope_checks_the_header_alone() -> None:
    frames = wire.encode(wire.InferRequest(42, "b", "c", (wire.Tensor("act", np.zeros(3)),)))
    envelope = wire.read_envelope([frames[0], b"abc"])
    assert (envelope.kind, envelope.request_id) == ("infer", 42)
    assert [t.name for t in envelope.tensors] == ["act"]
    with pytest.raises(PayloadError, match="payload has 3 bytes"):
        wire.decode_body(envelope, encoded=True)


def test_a_payload_of_another_length_is_answered_with_the_request_id(
    node: CloudNode, untrained_bundle: Bundle
) -> None:
    frames = _infer(untrained_bundle, untrained_bundle.manifest.cuts[1].id)
    error = _error(node.handle([frames[0], b"abc"], 0.0))
    assert (error.code, error.request_id) == ("payload", 42)


def test_a_bad_field_is_answered_with_the_request_id(
    node: CloudNode, untrained_bundle: Bundle
) -> None:
    cut = untrained_bundle.manifest.cuts[1]
    act = np.zeros((1, *cut.shape), dtype=cut.dtype)
    meta, payload = wire.encode_tensor(cut.name, act, "raw")
    header = pack_header("infer", 42, {"bundle": 5, "cut": cut.id}, [meta])
    error = _error(node.handle([header, payload], 0.0))
    assert (error.code, error.request_id) == ("header", 42)
    assert "bundle" in error.message


@pytest.mark.parametrize(
    ("cut_id", "bundle_id", "code"),
    [("c99", None, "unknown_cut"), (None, "0" * 64, "bundle_mismatch")],
)
def test_the_bundle_and_cut_are_checked_before_the_payload(
    node: CloudNode,
    untrained_bundle: Bundle,
    no_decompression: list[str],
    cut_id: str | None,
    bundle_id: str | None,
    code: str,
) -> None:
    cut = untrained_bundle.manifest.cuts[1]
    act = np.zeros((1, *cut.shape), dtype=cut.dtype)
    request = wire.InferRequest(
        42, bundle_id or untrained_bundle.id, cut_id or cut.id, (wire.Tensor(cut.name, act),)
    )
    frames = wire.encode(request)
    error = _error(node.handle([frames[0], b"abc"], 0.0))
    assert (error.code, error.request_id) == (code, 42)
    assert no_decompression == []


def test_a_good_request_is_still_admitted(node: CloudNode, untrained_bundle: Bundle) -> None:
    assert node.handle(_infer(untrained_bundle, untrained_bundle.manifest.cuts[1].id), 0.0) is None
    assert len(node.queue) == 1


def test_a_control_message_with_a_bad_field_is_answered_with_its_id(node: CloudNode) -> None:
    header = pack_header("fetch", 42, {"bundle": 5}, [])
    error = _error(node.handle([header], 0.0))
    assert (error.code, error.request_id) == ("header", 42)
