"""The public surface of ``wire``: exactly these names, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys
import types

import wire

EXPECTED = {
    "ALLOWED_DTYPES",
    "ALL_CODECS",
    "AnyMessage",
    "AnyTensor",
    "Busy",
    "Chunk",
    "Codec",
    "DEFAULT_CODEC",
    "EncodedTensor",
    "Envelope",
    "ErrorReply",
    "Fetch",
    "FieldError",
    "FleetQuery",
    "FleetReport",
    "Frames",
    "Hello",
    "InferRequest",
    "KINDS",
    "Limits",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Ping",
    "Pong",
    "Result",
    "SUPPORTED_CODECS",
    "Tensor",
    "TensorMeta",
    "Welcome",
    "decode",
    "decode_body",
    "decode_tensor",
    "encode",
    "encode_tensor",
    "error_code",
    "parse_codec",
    "read_envelope",
    "tensors_of",
}


def test_all_lists_exactly_the_public_api() -> None:
    assert set(wire.__all__) == EXPECTED
    assert len(wire.__all__) == len(EXPECTED)  # no duplicates


def test_every_exported_name_exists_and_is_defined_in_wire() -> None:
    for name in wire.__all__:
        member = getattr(wire, name)
        module = getattr(member, "__module__", None)
        # Functions and classes, not the constants nor the type aliases (list[...], A | B).
        if callable(member) and not isinstance(member, types.GenericAlias):
            assert module is not None and module.startswith("wire."), (name, module)


def test_the_untyped_api_is_gone() -> None:
    # Messages are encoded and decoded only through the typed classes.
    for name in ("Message", "encode_message", "decode_message", "decode_header"):
        assert not hasattr(wire, name), name
    assert "wire.message" not in sys.modules


def test_no_public_name_left_out_of_all() -> None:
    public = {
        name
        for name, member in vars(wire).items()
        if not name.startswith("_") and getattr(member, "__module__", "").startswith("wire.")
    }
    assert public <= set(wire.__all__)


def test_wire_imports_neither_torch_nor_zmq_nor_other_edgesplit_packages() -> None:
    code = (
        "import sys, wire\n"
        "ours = ('edgesplit', 'partitioner', 'offload_policy', 'edge_node', 'cloud_node')\n"
        "mods = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'zmq', *ours))\n"
        "print(' '.join(mods))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["edgesplit", "edgesplit.errors"]
