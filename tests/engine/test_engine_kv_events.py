"""KV events out of the built-in engine: the numbered, resumable /v1/kv_events stream and the
vLLM-format ZMQ publisher (PUB + replay), read back through real sockets."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import zmq

from supernode.api.hashing import block_hashes
from supernode.api.kv_events import END_SEQ, AllBlocksCleared, BlockStored, decode_batch, seq_bytes, seq_of
from supernode.engine.kv_publisher import ZmqKVPublisher
from supernode.engine.tokenizer import Tokenizer
from tests.engine.test_engine_http import MODEL, Stack


def read_events(url: str, n: int, **params: str) -> list[dict[str, Any]]:
    """The first ``n`` events of one /v1/kv_events connection (blank keep-alive lines skipped)."""
    got: list[dict[str, Any]] = []
    with httpx.Client(base_url=url, timeout=10) as c, c.stream(
            "GET", "/v1/kv_events", params={"format": "ndjson", **params}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.strip():
                got.append(json.loads(line))
            if len(got) == n:
                return got
    raise AssertionError(f"stream ended after {len(got)} events")


def complete(s: Stack, prompt: list[int]) -> None:
    r = s.client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_stream_resumes_after_a_seq_and_snapshots_otherwise(
    server_thread: Any, tokenizer: Tokenizer, fake_runner_factory: Any
) -> None:
    with Stack(server_thread, tokenizer, fake_runner_factory(num_kv_blocks=64)) as s:
        s.state.kv_keepalive_s = 0.1
        first = list(range(100, 109))  # two full blocks of 4
        complete(s, first)
        (snap,) = read_events(s.server.url, 1)
        assert snap["type"] == "snapshot" and set(block_hashes(first, MODEL, 4)) <= set(snap["block_hashes"])
        second = list(range(300, 309))
        complete(s, second)

        resumed = read_events(s.server.url, 1, after=str(snap["seq"]), instance=snap["instance"])
        assert resumed[0]["type"] == "stored" and resumed[0]["seq"] == snap["seq"] + 1
        assert resumed[0]["block_hashes"] == block_hashes(second, MODEL, 4)

        (other,) = read_events(s.server.url, 1, after=str(snap["seq"]), instance="another-engine")
        assert other["type"] == "snapshot" and other["seq"] == snap["seq"] + 1  # a restart: full resync

        bad = s.client.get("/v1/kv_events", params={"after": "-3", "instance": snap["instance"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"


def test_zmq_publisher_speaks_vllm_format_with_replay(
    server_thread: Any, tokenizer: Tokenizer, fake_runner_factory: Any, tmp_path: Path
) -> None:
    pub_addr, replay_addr = f"ipc://{tmp_path}/kv.pub", f"ipc://{tmp_path}/kv.replay"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    with Stack(server_thread, tokenizer, fake_runner_factory(num_kv_blocks=64)) as s:
        publisher = ZmqKVPublisher(pub_addr, replay_addr, topic="kv", block_size=4)
        s.engine.kv_sinks.append(publisher)
        sub.connect(pub_addr)
        prompt = list(range(100, 113))  # three full blocks
        while True:  # PUB drops messages until the subscription is through; the replay has them all
            complete(s, prompt)
            if sub.poll(200):
                break
        topic, seq, _ = sub.recv_multipart()
        assert topic == b"kv" and seq_of(seq) >= 0
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.RCVTIMEO, 10_000)
        dealer.connect(replay_addr)
        dealer.send_multipart((b"", seq_bytes(0)))
        replayed = []
        while (frames := dealer.recv_multipart())[1] != END_SEQ:
            replayed.append((seq_of(frames[1]), decode_batch(frames[2])))
        dealer.close()
    sub.close()
    assert [n for n, _ in replayed] == list(range(len(replayed)))
    assert isinstance(replayed[0][1].events[0], AllBlocksCleared)  # a fresh engine says its cache is empty
    stored = replayed[1][1].events[0]
    assert isinstance(stored, BlockStored) and stored.parent_block_hash is None and stored.block_size == 4
    assert stored.block_hashes == block_hashes(prompt, MODEL, 4) and stored.token_ids == prompt[:12]


def test_load_records_follow_the_request_count_coalesced(
    server_thread: Any, tokenizer: Tokenizer, fake_runner_factory: Any
) -> None:
    """?load=1: a load record as the stream opens, then the counts as they change, at most one
    record per interval (the last change still arrives); a reader that does not ask gets none."""
    with Stack(server_thread, tokenizer, fake_runner_factory(num_kv_blocks=256, delay_s=0.01)) as s:
        s.state.kv_load_interval_s = 0.3
        changes: list[tuple[int, int]] = []
        load = s.engine.kv_events.load
        real_set = load.set

        def counting_set(running: int, waiting: int) -> None:
            changes.append((running, waiting))
            real_set(running, waiting)

        load.set = counting_set  # type: ignore[method-assign]
        got: list[dict[str, Any]] = []
        done = threading.Event()

        def read() -> None:
            with httpx.Client(base_url=s.server.url, timeout=20) as c, c.stream(
                    "GET", "/v1/kv_events", params={"format": "ndjson", "load": "1"}) as r:
                for line in r.iter_lines():
                    if line.strip():
                        got.append(json.loads(line))
                    loads = [g for g in got if g["type"] == "load"]
                    if (len(loads) > 1 and loads[-1]["running"] + loads[-1]["waiting"] == 0) or done.is_set():
                        return

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.4)  # the first record went out; the next change is due at once
        with ThreadPoolExecutor(8) as pool:  # eight requests finishing at eight different steps
            list(pool.map(lambda n: s.client.post("/v1/completions", json={
                "model": MODEL, "prompt": list(range(10 + n, 30 + n)), "max_tokens": 4 + 4 * n}), range(8)))
        reader.join(15)
        done.set()
        loads = [g for g in got if g["type"] == "load"]
        assert [g["type"] for g in got[:2]] in (["load", "snapshot"], ["snapshot", "load"])
        assert loads[0] == {"type": "load", "instance": s.engine.kv_instance, "running": 0, "waiting": 0}
        assert any(g["running"] + g["waiting"] > 0 for g in loads)
        assert loads[-1]["running"] + loads[-1]["waiting"] == 0  # the last change is never lost
        assert len(changes) >= 9 and len(loads) - 1 < len(changes)  # coalesced

        plain = read_events(s.server.url, 1)  # a reader that predates load records sees none
        assert plain[0]["type"] == "snapshot"
        assert s.client.get("/v1/kv_events", params={"load": "yes"}).status_code == 400
