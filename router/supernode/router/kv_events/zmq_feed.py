"""KV events in vLLM's format: a ZMQ SUB socket on the engine's publisher, a DEALER for replays.

Batches are numbered from 0 per engine process. The feed applies them in order; a batch beyond the
next expected one asks the replay socket for the missing ones. The index is *complete* (the endpoint
precise) when it holds the engine's history from its first batch, or since an ``AllBlocksCleared``;
when the replay cannot fill a gap (its buffer moved on, or there is no replay socket), the index is
cleared and the endpoint stays approximate until the history is complete again. A sequence going
back means the engine restarted: its old blocks leave the index. A feed of one data-parallel rank
(``rank``) refuses batches another rank signed (``data_parallel_rank``): its port is not that rank's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

from supernode.api.kv_events import END_SEQ, AllBlocksCleared, MalformedEvents, decode_batch, seq_bytes, seq_of
from supernode.router.kv_events.apply import BadEvents, FeedHooks, apply_batch
from supernode.router.kv_events.reblock import Reblocker
from supernode.router.routing.precise_index import PreciseIndex

log = logging.getLogger("supernode.router.kv_events")


class ZmqFeed:
    def __init__(self, key: str, model: str, address: str, replay_address: str, index: PreciseIndex, *,
                 hooks: FeedHooks, bad_input_retry_s: float, replay_timeout_s: float = 2.0,
                 seed_of: Callable[[str], str] = str, router_block_size: int | None = None,
                 rank: int | None = None):
        self.key = key  # the index's key: the endpoint's URL, or one of its ranks' (routing/dp_ranks.py)
        self.rank = rank  # the data-parallel rank this publisher is expected to be (None: any)
        self.model = model
        self.seed_of = seed_of  # model → the name the router's block hashes for it are seeded with
        self.address = address
        self.replay_address = replay_address
        self.index = index
        # The router's block size for the model, when known: the engine's blocks are cut into it (reblock.py).
        self.blocks = Reblocker(router_block_size, index.max_blocks) if router_block_size else None
        self.hooks = hooks
        self.bad_input_retry_s = bad_input_retry_s
        self.replay_timeout_s = replay_timeout_s
        self.expected: int | None = None  # the next batch's sequence number
        self.complete = False
        self._ahead: tuple[int, bytes] | None = None  # a batch past a gap, applied once the gap is filled
        self._last = b""  # the last applied payload (tells a replay of our history from a restarted engine's)

    def _clear(self) -> None:
        self.index.clear(self.key)
        if self.blocks is not None:
            self.blocks.clear()

    def _set_complete(self, value: bool) -> None:
        self.complete = value
        self.index.set_precise(self.key, value)
        self.hooks.set_prefix_mode(self.key, value)

    async def run(self) -> None:
        ctx = zmq.asyncio.Context.instance()
        while True:
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(self.address)
            try:
                while True:
                    self.receive(*await self._frames(sub))
                    await self._fill_gap_if_any()
            except BadEvents as e:
                log.warning("KV events from %s (%s) are malformed (%s); approximate routing for %gs",
                            self.key, self.address, e, self.bad_input_retry_s)
                self.hooks.kv_events_malformed(self.key)
            finally:
                sub.close()
            self._clear()
            self.expected = None
            self._set_complete(False)
            await asyncio.sleep(self.bad_input_retry_s)

    @staticmethod
    async def _frames(sub: zmq.asyncio.Socket) -> tuple[int, bytes]:
        frames = await sub.recv_multipart()
        if len(frames) != 3:
            raise BadEvents(f"message: expected [topic, seq, payload], got {len(frames)} frames")
        try:
            return seq_of(frames[1]), frames[2]
        except ValueError as e:
            raise BadEvents(str(e)) from None

    # --- ordering (no I/O: the pending gap is filled by _fill_gap_if_any) --------------------------
    def receive(self, seq: int, payload: bytes) -> None:
        """One published batch. Batches ahead of the expected one wait for the replay (kept in _ahead)."""
        if self.expected is not None and seq < self.expected:
            log.info("KV events from %s restarted at seq %d (expected %d): the engine restarted", self.key, seq,
                     self.expected)
            self._clear()
            self.expected = None
            self._set_complete(False)
        if self.expected is None and seq == 0:
            self.expected = 0
            self._set_complete(True)
        if seq == self.expected:
            self._apply(seq, payload)
        else:
            self._ahead = (seq, payload)

    async def _fill_gap_if_any(self) -> None:
        """Replay what lies between the last applied batch and the one that arrived ahead of it. The
        replay starts at the last applied batch: if that is not the very payload we applied, the numbers
        belong to a restarted engine (a fresh one can count past where the old one stopped)."""
        if self._ahead is None:
            return
        seq, payload = self._ahead
        self._ahead = None
        replayed: list[tuple[int, bytes]] = []
        if self.expected is not None and self.replay_address:
            replayed = await self._replay(self.expected - 1)
            if replayed[:1] == [(self.expected - 1, self._last)]:
                replayed = replayed[1:]
            else:
                log.info("KV events from %s: the engine restarted (its history differs)", self.key)
                self._clear()
                self.expected = None
        if self.expected is None and self.replay_address:
            replayed = await self._replay(0)
        start = 0 if self.expected is None else self.expected
        if not replayed or replayed[0][0] != start:
            log.info("KV events from %s: batches %d..%d are gone; approximate until the history is complete",
                     self.key, start, seq - 1)
            self._clear()
            self._set_complete(False)
            self.expected = seq
            self._apply(seq, payload)
            return
        self.expected = start
        if start == 0:
            self._set_complete(True)
        for s, p in replayed:
            if s == self.expected:
                self._apply(s, p)
        if self.expected == seq:
            self._apply(seq, payload)

    def _apply(self, seq: int, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except MalformedEvents as e:
            raise BadEvents(str(e)) from None
        if self.rank is not None and batch.data_parallel_rank not in (None, self.rank):
            raise BadEvents(f"data_parallel_rank: {batch.data_parallel_rank} on the port of rank {self.rank}")
        apply_batch(self.index, self.key, self.seed_of(self.model), batch, self.blocks)
        self.expected, self._last = seq + 1, payload
        if any(isinstance(ev, AllBlocksCleared) for ev in batch.events) and not self.complete:
            self._set_complete(True)

    async def _replay(self, start: int) -> list[tuple[int, bytes]]:
        """Buffered batches from ``start`` on ([] when the replay socket does not answer in time)."""
        ctx = zmq.asyncio.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.replay_address)
        out: list[tuple[int, bytes]] = []
        try:
            await dealer.send_multipart((b"", seq_bytes(start)))
            while True:
                frames = await asyncio.wait_for(dealer.recv_multipart(), self.replay_timeout_s)
                if len(frames) != 3:
                    raise BadEvents(f"replay: expected [empty, seq, payload], got {len(frames)} frames")
                if frames[1] == END_SEQ:
                    return out
                try:
                    out.append((seq_of(frames[1]), frames[2]))
                except ValueError as e:
                    raise BadEvents(f"replay: {e}") from None
        except TimeoutError:
            log.info("KV event replay from %s timed out", self.replay_address)
            return []
        finally:
            dealer.close()
