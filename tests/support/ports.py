"""Free loopback ports, for servers and Envoys that tests and the bench start side by side."""

import socket


def free_port() -> int:
    """A port no one listens on now (the kernel's pick), for a child to bind next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """`count` consecutive free ports (a server with --workers N listens on port + i)."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return list(range(base, base + count))
    raise RuntimeError(f"found no {count} consecutive free ports")
