"""Free loopback ports, for servers and Envoys that tests and the bench start side by side.

A port is handed on free for a child to bind later, and between the two another process
could take it. So the ports come from below the kernel's ephemeral range (Linux's default
is 32768-60999; macOS's and Windows' start at 49152), where no bind to port 0 and no
outgoing connection lands, and each pytest-xdist worker draws from a block of its own, in
turn: no two workers hand out the same port, and a worker hands one out again only once
its block has wrapped round. A port still bound (a server of an earlier test, another
program) is skipped."""

import os
import random
import socket
import threading

_FIRST, _END = 20000, 32768


def _block() -> range:
    """This process's ports: its xdist worker's share of the range (the whole range
    outside xdist). A child the tests start inherits the variables, and so its worker's
    block; it draws from a random place in it, and skips what its parent holds bound."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    # xdist names its workers gw0, gw1, ...; a worker restarted after a crash gets the
    # next name, which wraps onto the block of an earlier one.
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % count
    size = (_END - _FIRST) // count
    return range(_FIRST + index * size, _FIRST + (index + 1) * size)


_lock = threading.Lock()
_ports = _block()
_next = _ports.start + random.randrange(len(_ports))


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def is_free(port: int) -> bool:
    """Whether nothing is bound to `port` on loopback now (a restarted child's old port may
    have been taken meanwhile, by anyone on the machine)."""
    return _bindable(port)


def free_ports(count: int) -> list[int]:
    """`count` consecutive free ports (a server with --workers N listens on port + i)."""
    global _next
    with _lock:
        for _ in range(len(_ports)):
            if _next + count > _ports.stop:
                _next = _ports.start
            base, _next = _next, _next + count
            if all(_bindable(port) for port in range(base, base + count)):
                return list(range(base, base + count))
    raise RuntimeError(f"found no {count} consecutive free ports in {_ports}")


def free_port() -> int:
    """A port no one listens on now, which no other worker hands out, for a child to bind."""
    return free_ports(1)[0]
