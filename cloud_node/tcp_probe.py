"""What the kernel knows of a TCP connection, and of this process's memory.

The peer guard (:mod:`cloud_node.guard`) measures each connection of the
ROUTER from outside libzmq: the bytes that arrived and were acknowledged
(``TCP_INFO``), what waits in the kernel's queues (``SIOCINQ``,
``SIOCOUTQ``), the process's resident memory (``/proc/self/statm``), and what
ZMTP adds to each frame. Linux only; elsewhere a measure is ``None`` (not
measured) and the resident memory 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received, u64 at 120 and 128
# (Linux 4.1 and later).
_TCP_INFO_LEN = 136
_ACKED_RECEIVED = struct.Struct("QQ")
_ACKED_OFFSET = 120
_SIOCOUTQ = termios.TIOCOUTQ
_SIOCINQ = termios.FIONREAD
_INT = struct.Struct("i")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``); 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def trimmer() -> Callable[[], None]:
    """The C library's ``malloc_trim(0)`` (gives freed heap back to the system), else nothing."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None

    def run() -> None:
        trim(0)

    return run


def frame_overhead(nbytes: int, curve: bool) -> int:
    """Bytes ZMTP 3 adds to a frame of ``nbytes`` on the wire (CURVE: its MESSAGE box)."""
    body = nbytes + (33 if curve else 0)  # "\\x07MESSAGE" + nonce 8 + MAC 16 + flags 1
    return body - nbytes + (2 if body <= 255 else 9)


@contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket | None]:
    """A socket object over libzmq's descriptor (``None``: not a socket), never closed."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        yield None
        return
    try:
        yield sock
    finally:
        sock.detach()  # libzmq owns the descriptor


def measure(fd: int) -> tuple[object, int, int, int, int] | None:
    """(peer address, bytes received, bytes acked, unread in, unacked out) of a TCP fd."""
    with _borrowed(fd) as sock:
        if sock is None:
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
            address = sock.getpeername()
            buf = bytearray(_INT.size)
            fcntl.ioctl(fd, _SIOCINQ, buf)
            unread = _INT.unpack(buf)[0]
            fcntl.ioctl(fd, _SIOCOUTQ, buf)
            unacked = _INT.unpack(buf)[0]
        except OSError:
            return None
    if len(info) < _TCP_INFO_LEN:
        return None
    acked, received = _ACKED_RECEIVED.unpack_from(info, _ACKED_OFFSET)
    return address, received, acked, unread, unacked


def peer_address(fd: int) -> object:
    """The peer address of a connected descriptor, ``None`` when it has none."""
    with _borrowed(fd) as sock:
        try:
            return None if sock is None else sock.getpeername()
        except OSError:
            return None


def shut_down(fd: int) -> None:
    """Shut a connection down both ways (libzmq then closes it and frees what it held)."""
    with _borrowed(fd) as sock:
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


__all__ = ["frame_overhead", "measure", "peer_address", "resident_bytes", "shut_down", "trimmer"]
