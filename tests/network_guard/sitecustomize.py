"""Loaded by every Python process that has this folder on PYTHONPATH (tests only).

Any socket connection to a non-loopback address raises and is logged to $BB_NETWORK_LOG,
so an offline run that tries to reach the network fails loudly. Loopback stays open
because Jupyter kernels talk to papermill over 127.0.0.1.
"""

import os
import socket

_LOG = os.environ.get("BB_NETWORK_LOG")
_LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")


def _allowed(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = str(address[0]) if address else ""
    return host.startswith(_LOOPBACK) or host == ""


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _record(address):
    if _LOG:
        with open(_LOG, "a") as handle:
            handle.write(f"{os.getpid()} blocked connect to {address!r}\n")
    raise OSError(f"network guard: connection to {address!r} blocked in an offline test run")


def _connect(self, address):
    if not _allowed(address):
        _record(address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    if not _allowed(address):
        _record(address)
    return _real_connect_ex(self, address)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
if _LOG:
    with open(_LOG + ".loaded", "a") as handle:
        handle.write(f"{os.getpid()}\n")
