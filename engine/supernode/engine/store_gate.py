"""The group's rendezvous store behind an authenticating gate (docs/security.md).

torch's TCPStore has no authentication and listens on every interface. So the leader runs the real
store on loopback only, and the group address (the pod IP, or loopback locally) is served by a
`StoreGate`: a connection is relayed to the store only after it proved the per-group secret
(``SUPERNODE_GROUP_SECRET``) in a mutual HMAC-SHA256 challenge:

    gate -> peer  MAGIC + gate nonce (32 bytes)
    peer -> gate  peer nonce (32) + HMAC(secret, "peer" + gate nonce + peer nonce)
    gate -> peer  HMAC(secret, "gate" + gate nonce + peer nonce)

Anything else (garbage, a wrong secret, a plain TCPStore client, silence past `HANDSHAKE_TIMEOUT_S`)
closes that connection and nothing more; at most `MAX_HANDSHAKES` may be pending at once. Followers
reach the gate through a `StoreTunnel`, a loopback listener that performs the handshake for the
unmodified TCPStore client. Both run an asyncio loop in one daemon thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAGIC = b"SNSTORE1"
NONCE_BYTES = 32
MAC_BYTES = 32
HANDSHAKE_TIMEOUT_S = 5.0
MAX_HANDSHAKES = 64


def _mac(secret: bytes, label: bytes, gate_nonce: bytes, peer_nonce: bytes) -> bytes:
    return hmac.new(secret, label + gate_nonce + peer_nonce, hashlib.sha256).digest()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        writer.close()


async def _relay(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


class _LoopThread:
    """An asyncio loop in a daemon thread, serving one listening socket."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None

    def serve(self, sock: socket.socket,
              handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self._thread.start()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, sock=sock)

        self._server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self.loop.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket bound to exactly ``host`` (IPv4 or IPv6 literal)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


class StoreGate:
    """Leader side: accepts on ``sock`` (the group address) and relays authenticated peers to the store."""

    def __init__(self, sock: socket.socket, inner_port: int, secret: bytes) -> None:
        self.sock, self.inner_port, self.secret = sock, inner_port, secret
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.accepted = self.refused = 0
        self._pending = 0
        self._loop = _LoopThread("store-gate")

    def start(self) -> StoreGate:
        self._loop.serve(self.sock, self._handle)
        return self

    def close(self) -> None:
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self._pending >= MAX_HANDSHAKES:
            self.refused += 1
            writer.close()
            return
        self._pending += 1
        try:
            ok = await self._handshake(reader, writer)
        finally:
            self._pending -= 1
        if not ok:
            self.refused += 1
            log.warning("group store: refused %s (no valid group secret)", peer)
            writer.close()
            return
        self.accepted += 1
        try:
            inner = await asyncio.open_connection("127.0.0.1", self.inner_port)
        except OSError as e:
            log.warning("group store: local store unreachable for %s: %s", peer, e)
            writer.close()
            return
        await _relay((reader, writer), inner)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        gate_nonce = os.urandom(NONCE_BYTES)
        try:
            writer.write(MAGIC + gate_nonce)
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await writer.drain()
                answer = await reader.readexactly(NONCE_BYTES + MAC_BYTES)
            peer_nonce, mac = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
            if not hmac.compare_digest(mac, _mac(self.secret, b"peer", gate_nonce, peer_nonce)):
                return False
            writer.write(_mac(self.secret, b"gate", gate_nonce, peer_nonce))
            await writer.drain()
            return True
        except (TimeoutError, asyncio.IncompleteReadError, OSError, ConnectionError):
            return False


class GateRefused(ConnectionError):
    """The gate closed the connection during the handshake (wrong secret) or is not a gate."""


async def open_through_gate(host: str, port: int, secret: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a gate and prove the secret (and check the gate knows it too)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            hello = await reader.readexactly(len(MAGIC) + NONCE_BYTES)
            if hello[: len(MAGIC)] != MAGIC:
                raise GateRefused(f"{host}:{port} is not a supernode group store")
            gate_nonce, peer_nonce = hello[len(MAGIC):], os.urandom(NONCE_BYTES)
            writer.write(peer_nonce + _mac(secret, b"peer", gate_nonce, peer_nonce))
            await writer.drain()
            proof = await reader.readexactly(MAC_BYTES)
        if not hmac.compare_digest(proof, _mac(secret, b"gate", gate_nonce, peer_nonce)):
            raise GateRefused(f"{host}:{port} does not know this group's secret")
    except asyncio.IncompleteReadError:
        writer.close()
        raise GateRefused(f"{host}:{port} refused this rank's group secret") from None
    except BaseException:
        writer.close()
        raise
    return reader, writer


class StoreTunnel:
    """Follower side: a loopback listener; each local connection is carried to the leader's gate.

    The leader may start later than its followers, so reaching the gate is retried until ``timeout_s``.
    """

    def __init__(self, gate_host: str, gate_port: int, secret: bytes, timeout_s: float) -> None:
        self.gate_host, self.gate_port, self.secret, self.timeout_s = gate_host, gate_port, secret, timeout_s
        self.sock = listen("127.0.0.1", 0)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._loop = _LoopThread("store-tunnel")

    def start(self) -> StoreTunnel:
        self._loop.serve(self.sock, self._handle)
        return self

    def close(self) -> None:
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        while True:
            try:
                upstream = await open_through_gate(self.gate_host, self.gate_port, self.secret)
                break
            except (OSError, TimeoutError) as e:
                if time.monotonic() + delay > deadline:
                    log.error("group store at %s:%d unreachable: %s", self.gate_host, self.gate_port, e)
                    writer.close()
                    return
                if isinstance(e, GateRefused):
                    log.warning("%s; retrying", e)
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
        await _relay((reader, writer), upstream)
