"""`supernode up`'s port check: a previous run's connections in TIME_WAIT do not block it, a listener does."""

from __future__ import annotations

import socket

from supernode.cli.local import procs


def _time_wait_port() -> int:
    """A port with no listener left but a server-side connection in TIME_WAIT (the server closed first,
    as uvicorn does on shutdown)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # active close on the server side: its end (port P) goes to TIME_WAIT
    client.recv(1)  # sees EOF
    client.close()
    listener.close()
    return port


def test_time_wait_connections_do_not_block_the_port() -> None:
    port = _time_wait_port()
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:  # the old check (no SO_REUSEADDR) would refuse here: the condition the fix addresses is present
        plain.bind(("127.0.0.1", port))
        blocked_without_reuse = False
    except OSError:
        blocked_without_reuse = True
    finally:
        plain.close()
    assert blocked_without_reuse
    assert procs.port_free(port)


def test_a_listener_still_blocks_the_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert not procs.port_free(int(listener.getsockname()[1]))
