"""CurveZMQ on the edge-cloud channel: key files, the allow-list, and the ZAP handler.

The cloud holds a server key pair and a directory of allowed client public
keys; each edge holds its own key pair and the cloud's public key. Key files
are ZeroMQ's certificate format (``NAME.key`` public, ``NAME.key_secret``
secret, written 0600). A client whose key is not allowed fails the CURVE
handshake in the ZAP handler: it never reaches the cloud node's code.
Both runtimes import this module; it holds no policy and no model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from edgesplit.errors import ConfigError

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "edgesplit"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair (Z85 text, 40 bytes each) and the file it came from."""

    public: bytes
    secret: bytes
    path: Path


def new_key_paths(directory: Path, name: str, suffixes: tuple[str, ...]) -> list[Path]:
    """``directory/NAME+suffix`` for each suffix, none existing yet; the directory is made.

    Raises:
        ConfigError: a bad name, or a key of that name exists (never overwritten).
    """
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r}: expected a plain file name such as 'cloud'")
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}{suffix}" for suffix in suffixes]
    for path in paths:
        if path.exists():
            raise ConfigError(f"{path}: exists; keys are never overwritten (remove it first)")
    return paths


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new key pair ``NAME.key`` and ``NAME.key_secret`` (0600) into ``directory``.

    Raises:
        ConfigError: a bad name, or a key of that name already exists (never overwritten).
    """
    new_key_paths(directory, name, (".key", ".key_secret"))
    public_str, secret_str = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret_str, 0o600)
    return Path(public_str), Path(secret_str)


def load_keypair(path: Path) -> KeyPair:
    """This node's key pair from a ``.key_secret`` file.

    Raises:
        ConfigError: missing, unreadable, or holding no secret key.
    """
    public, secret = _read_certificate(path)
    if secret is None:
        raise ConfigError(
            f"{path}: holds no secret key; give the NAME.key_secret file written by "
            "`edgesplit keys`"
        )
    return KeyPair(public, secret, path)


def load_public_key(path: Path) -> bytes:
    """A public key from a ``.key`` (or ``.key_secret``) file.

    Raises:
        ConfigError: missing or unreadable.
    """
    return _read_certificate(path)[0]


def load_allowed(directory: Path) -> dict[bytes, str]:
    """The allowed client public keys in ``directory`` (``*.key`` files), key -> file name.

    Raises:
        ConfigError: not a directory, or no key in it (an empty allow-list serves no one).
    """
    if not directory.is_dir():
        raise ConfigError(f"allowed clients {directory}: not a directory of *.key files")
    allowed = {load_public_key(p): p.stem for p in sorted(directory.glob("*.key"))}
    if not allowed:
        raise ConfigError(
            f"allowed clients {directory}: no *.key files; copy each edge's NAME.key there"
        )
    return allowed


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such key file (create keys with `edgesplit keys`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a ZeroMQ key file: {exc}") from exc
    if public is None or len(public) != 40:
        raise ConfigError(f"{path}: no valid public-key line")
    return public, secret


def make_curve_server(sock: zmq.Socket[Any], keys: KeyPair) -> None:
    """Make ``sock`` a CURVE server checked by the ZAP handler (set before bind)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN.encode()


def make_curve_client(sock: zmq.Socket[Any], keys: KeyPair, server_public: bytes) -> None:
    """Make ``sock`` a CURVE client of the server with ``server_public`` (set before connect)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public


class Authenticator:
    """A ZAP handler thread: CURVE clients whose key is allow-listed get in, no one else.

    Every decision is counted in :attr:`counts` (``allowed``, ``denied_key``,
    ``denied_mechanism``) and denials are logged with the peer address and
    the key's first characters, never a secret.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        allowed: dict[bytes, str],
        on_decision: Callable[[str], None] | None = None,
    ) -> None:
        self.allowed = dict(allowed)
        self._on_decision = on_decision
        self._last = ""
        self.counts: Counter[str] = Counter()
        self._socket = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgesplit-zap", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                frames = self._socket.recv_multipart()
            except zmq.ZMQError:
                break
            reply = self._answer(frames)
            if self._on_decision is not None:
                self._on_decision(self._last)
            self._socket.send_multipart(reply)
        self._socket.close(linger=0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6:
            self._decide("denied_malformed")
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"400", b"malformed", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        peer = address.decode(errors="replace")
        if mechanism != b"CURVE" or len(frames) < 7:
            self._decide("denied_mechanism")
            log.warning("denied peer=%s mechanism=%s", peer, mechanism.decode(errors="replace"))
            return [version, request_id, b"400", b"CURVE required", b"", b""]
        key = zmq.utils.z85.encode(frames[6])
        name = self.allowed.get(key)
        if name is None:
            self._decide("denied_key")
            log.warning("denied peer=%s key=%s... (not in the allow-list)", peer, key[:8].decode())
            return [version, request_id, b"400", b"unknown key", b"", b""]
        self._decide("allowed")
        log.info("allowed peer=%s client=%s", peer, name)
        return [version, request_id, b"200", b"OK", name.encode(), b""]

    def _decide(self, kind: str) -> None:
        self.counts[kind] += 1
        self._last = kind

    def close(self) -> None:
        """Stop the handler thread and close its socket."""
        self._stop.set()
        self._thread.join(timeout=2.0)
