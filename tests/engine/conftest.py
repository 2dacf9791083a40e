"""Engine test fixtures: a tiny byte-level tokenizer and a fake KV-reading runner (tests only)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from supernode.api import chattokens as T
from supernode.api.tokenchunks import DEEPSEEK_SPLITS
from supernode.engine.tokenizer import Tokenizer

CORPUS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "supernode serves models",
    "héllo wörld ✓ 你好",
] * 20


def build_tokenizer_json(path: Path, vocab_size: int = 400) -> Path:
    tok = HFTokenizer(models.BPE())  # DeepSeek V3's pre-tokenizer, as the real checkpoints (and init-checkpoint)
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in DEEPSEEK_SPLITS]
    tok.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                   use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        special_tokens=list(T.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    build_tokenizer_json(d / "tokenizer.json")
    return d


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tokenizer_dir)


class FakeRunner:
    """Deterministic stand-in for ModelRunner that really goes through the paged KV cache.

    Its "KV cache" stores each position's token in its block slot; the logits for a sequence are a
    pseudo-random function of the whole context *read back through the block table*, so a wrong
    block table or a bad prefix-cache hit changes the output.
    """

    def __init__(self, vocab: int, num_kv_blocks: int = 64, block_size: int = 4, delay_s: float = 0.0) -> None:
        self.vocab, self.num_kv_blocks, self.block_size, self.delay_s = vocab, num_kv_blocks, block_size, delay_s
        self.kv = torch.full((num_kv_blocks, block_size), -1, dtype=torch.int64)
        self.steps = 0
        self.fail_after: int | None = None
        self.banned: list[int] = []  # token ids the fake never produces (e.g. EOS, for length tests)

    def run(self, batch: list[Any]) -> torch.Tensor:
        import time

        self.steps += 1
        if self.fail_after is not None and self.steps > self.fail_after:
            raise RuntimeError("rank 1 died")
        if self.delay_s:
            time.sleep(self.delay_s)
        rows: list[torch.Tensor] = []
        for item in batch:
            for i, tok in enumerate(item.token_ids):
                pos = item.start_pos + i
                self.kv[item.block_table[pos // self.block_size], pos % self.block_size] = tok
            end = item.start_pos + len(item.token_ids)
            context = self.kv[item.block_table].flatten()[:end].tolist()
            assert -1 not in context, "read an unwritten KV slot"
            first = item.start_pos + 1 if getattr(item, "all_logits", False) else end
            rows += [self.logits(context[:stop]) for stop in range(first, end + 1)]
        return torch.stack(rows)

    def logits(self, context: list[int]) -> torch.Tensor:
        """The fake model: a pseudo-random function of the whole context (then ``steer``)."""
        digest = hashlib.blake2b(str(context).encode(), digest_size=8).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest, "little"))
        row = torch.randn(self.vocab, generator=gen) * 4
        row[self.banned] = float("-inf")
        self.steer(row, context)
        return row

    def steer(self, logits: torch.Tensor, context: list[int]) -> None:
        """Subclasses may shape a row's logits from the context (it is read back through the KV cache)."""


class ScriptedRunner(FakeRunner):
    """A fake model whose "weights" are a script: it continues any context that ends in a prefix of
    ``script`` with the script's next token (by a large logit margin), else starts the script.

    The other logits stay the pseudo-random ones of FakeRunner, so log-probabilities are non-trivial;
    every row returned is recorded in ``rows`` (context, logits) so tests can recompute them.
    """

    def __init__(self, vocab: int, script: list[int], margin: float = 12.0, **kwargs: Any) -> None:
        super().__init__(vocab, **kwargs)
        self.script, self.margin = script, margin
        self.rows: list[tuple[list[int], torch.Tensor]] = []

    def steer(self, logits: torch.Tensor, context: list[int]) -> None:
        done = next((k for k in range(len(self.script), 0, -1) if context[-k:] == self.script[:k]), 0)
        nxt = self.script[done] if done < len(self.script) else self.script[-1]
        logits[nxt] = logits.max() + self.margin
        self.rows.append((list(context), logits.clone()))

    def shutdown(self) -> None:
        pass


@pytest.fixture
def fake_runner_factory(tokenizer: Tokenizer) -> Iterator[Any]:
    def make(**kwargs: Any) -> FakeRunner:
        return FakeRunner(tokenizer.vocab_size, **kwargs)

    yield make


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread (stopped by the fixture)."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn
        from quick_uvicorn import QuickServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = QuickServer(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        # uvicorn waits for open connections (a router's KV event stream): stop their clients first
        assert exc_type is not None or not self.thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture(scope="session")
def server_thread() -> type[ServerThread]:
    return ServerThread


@pytest.fixture
def scripted(tokenizer: Tokenizer) -> Any:
    """``scripted(ids)``: a ScriptedRunner that writes ``ids`` (tests only)."""
    return lambda ids, **kw: ScriptedRunner(tokenizer.vocab_size, ids, **{"num_kv_blocks": 1024, **kw})
