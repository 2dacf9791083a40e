"""KV events out in vLLM's format (ZMQ PUB + a replay ROUTER), so vLLM-aware routers (llm-d, Dynamo,
ours) can route to this engine. Wire format: ``supernode.api.kv_events``.

The engine thread hands each step's events to ``offer`` (never blocks); a publisher thread owns the
sockets: it numbers and sends batches, keeps the last ``buffer_steps`` for replay and answers replay
requests. The first batch is ``AllBlocksCleared``: a subscriber that sees it (or a sequence going
back to 0) knows this is a fresh engine whose cache is empty.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

import zmq

from supernode.api.kv_events import (
    END_SEQ,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    KVEventBatch,
    encode_batch,
    seq_bytes,
)
from supernode.engine.core.block_manager import KVEvent

log = logging.getLogger("supernode.engine.kv_events")

MEDIUM = "GPU"  # vLLM's name for the device cache tier, whatever the accelerator


def to_wire(events: list[KVEvent], block_size: int) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        if ev.type == "stored" and ev.block_hashes:  # (vLLM's format has no word for ``ends``: see docs)
            out.append(BlockStored(list(ev.block_hashes), ev.parent, list(ev.token_ids), block_size, None, MEDIUM))
        elif ev.type == "removed":
            out.append(BlockRemoved(list(ev.block_hashes), MEDIUM))
        elif ev.type == "cleared":
            out.append(AllBlocksCleared())
    return out


class ZmqKVPublisher:
    def __init__(self, endpoint: str, replay_endpoint: str | None, *, topic: str, block_size: int,
                 buffer_steps: int = 10_000, max_queue: int = 100_000) -> None:
        self.block_size = block_size
        self._topic = topic.encode()
        self._queue: queue.Queue[list[Event] | None] = queue.Queue(max_queue)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._seq = 0
        self._dropped = 0
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._bind_or_connect(self._pub, endpoint)
        self._replay: zmq.Socket[bytes] | None = None
        if replay_endpoint:
            self._replay = self._ctx.socket(zmq.ROUTER)
            self._replay.setsockopt(zmq.LINGER, 0)
            self._replay.bind(replay_endpoint)
        self._queue.put([AllBlocksCleared()])
        self._thread = threading.Thread(target=self._run, name="kv-events-publisher", daemon=True)
        self._thread.start()

    @staticmethod
    def _bind_or_connect(sock: zmq.Socket[bytes], endpoint: str) -> None:
        """vLLM's convention: a wildcard, IPv6 any or local transport binds; a host:port connects."""
        if "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://")):
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)

    def offer(self, events: list[KVEvent]) -> None:
        """Called on the engine thread. A full queue drops the batch; subscribers see the gap and replay."""
        wire = to_wire(events, self.block_size)
        if not wire:
            return
        try:
            self._queue.put_nowait(wire)
        except queue.Full:
            self._dropped += 1
            if self._dropped & (self._dropped - 1) == 0:  # log at powers of two
                log.warning("KV event publisher queue full: %d batches dropped", self._dropped)

    def close(self, timeout: float = 2.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                if self._replay is not None and self._replay.poll(0):
                    self._serve_replay()
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is None:
                    break
                payload = encode_batch(KVEventBatch(time.time(), item, 0))
                self._pub.send_multipart((self._topic, seq_bytes(self._seq), payload))
                self._buffer.append((self._seq, payload))
                self._seq += 1
        except Exception:  # the engine keeps serving without KV events; routers fall back to approximate
            log.exception("KV event publisher stopped")
        finally:
            self._pub.close()
            if self._replay is not None:
                self._replay.close()

    def _serve_replay(self) -> None:
        assert self._replay is not None
        frames = self._replay.recv_multipart()
        if len(frames) != 3 or len(frames[2]) != 8:
            log.warning("ignoring a malformed KV event replay request (%d frames)", len(frames))
            return
        client, _, start = frames
        first = int.from_bytes(start, "big")
        for seq, payload in list(self._buffer):
            if seq >= first:
                self._replay.send_multipart((client, b"", seq_bytes(seq), payload))
        self._replay.send_multipart((client, b"", END_SEQ, b""))
