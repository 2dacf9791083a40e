"""Chat template, modes, reasoning/content split, stop strings, incremental detokenisation, sampling."""

from __future__ import annotations

import pytest
import torch

from supernode.api import chattokens as T
from supernode.api.chattemplate import ChatError, render_chat
from supernode.api.models import Mode
from supernode.engine.chat import OutputText
from supernode.engine.core.sequence import SamplingParams
from supernode.engine.sampler import Sampler, apply_penalties, filter_logits
from supernode.engine.tokenizer import IncrementalDecoder, Tokenizer

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_template_shapes_per_mode() -> None:
    non = render_chat(MSGS, Mode.NON_THINK)
    assert non == f"{T.BOS}be brief{T.USER}hi{T.ASSISTANT}{T.THINK_CLOSE}"
    assert render_chat(MSGS, Mode.THINK_HIGH).endswith(f"{T.ASSISTANT}{T.THINK_OPEN}")
    think_max = render_chat(MSGS, Mode.THINK_MAX)
    assert think_max.startswith(T.BOS + T.THINK_MAX_PREFIX) and think_max.endswith(T.THINK_OPEN)
    multi = render_chat(
        [*MSGS, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}], Mode.NON_THINK
    )
    assert f"{T.ASSISTANT}{T.THINK_CLOSE}yo{T.EOS}{T.USER}again" in multi


def test_template_rejects_bad_messages() -> None:
    with pytest.raises(ChatError, match=r"messages\[0\].role"):
        render_chat([{"role": "wizard", "content": "x"}], Mode.NON_THINK)
    with pytest.raises(ChatError, match="messages"):
        render_chat([], Mode.NON_THINK)


def byte_ids(tok: Tokenizer, text: str) -> list[int]:
    """One token per UTF-8 byte (the byte-level alphabet), to exercise split characters."""
    from tokenizers import pre_tokenizers

    alphabet = {b: c for b, c in zip(range(256), _bytes_to_unicode(), strict=True)}
    del pre_tokenizers
    return [tok._tok.token_to_id(alphabet[b]) for b in text.encode()]


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def test_incremental_decoder_never_splits_utf8(tokenizer: Tokenizer) -> None:
    ids = byte_ids(tokenizer, "a你✓b")
    dec = IncrementalDecoder(tokenizer)
    pieces = [dec.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + dec.flush() == "a你✓b"
    assert pieces[1:3] == ["", ""]  # the first two bytes of 你 are held back


def test_output_split_at_think_close(tokenizer: Tokenizer) -> None:
    out = OutputText(tokenizer, thinking=True)
    ids = [*tokenizer.encode("hello world"), tokenizer.think_close_id, *tokenizer.encode("the fox"), tokenizer.eos_id]
    deltas = [out.push(i) for i in ids]
    deltas.append(out.finish())
    assert "".join(d.reasoning for d in deltas) == "hello world" == out.reasoning
    assert "".join(d.content for d in deltas) == "the fox" == out.content


def test_stop_string_cuts_content_and_is_never_streamed(tokenizer: Tokenizer) -> None:
    out = OutputText(tokenizer, thinking=False, stop=("lazy",))
    sent = ""
    for i in byte_ids(tokenizer, "the quick lazy dog"):
        sent += out.push(i).content
        if out.stopped:
            break
    sent += out.finish().content
    assert out.stopped and sent == "the quick " and "laz" not in sent


def test_sampler_greedy_topk_topp() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0]])
    assert Sampler().sample(logits, [1], [SamplingParams(temperature=0)]) == [1]
    masked = filter_logits(logits[0], SamplingParams(top_k=2))
    assert torch.isinf(masked[[0, 2]]).all() and not torch.isinf(masked[[1, 3]]).any()
    nucleus = filter_logits(torch.tensor([10.0, 0.0, 0.0, 0.0]), SamplingParams(top_p=0.5))
    assert torch.isinf(nucleus[1:]).all() and nucleus[0] == 10.0


def test_seeded_request_is_deterministic_regardless_of_batch_mates() -> None:
    gen = torch.Generator().manual_seed(0)
    steps = [torch.randn(4, 50, generator=gen) for _ in range(8)]
    seeded, free = SamplingParams(seed=42), SamplingParams()
    alone, crowded = Sampler(seed=1), Sampler(seed=2)
    a = [alone.sample(x[2:3], [7], [seeded])[0] for x in steps]
    b = [crowded.sample(x, [1, 2, 7, 3], [free, free, seeded, free])[2] for x in steps]
    assert a == b and len(set(a)) > 1


def test_presence_and_frequency_penalties() -> None:
    logits = torch.zeros(4)
    out = apply_penalties(logits, [1, 1, 2], SamplingParams(presence_penalty=0.5, frequency_penalty=1.0))
    assert out.tolist() == [0.0, -2.5, -1.5, 0.0]
    s = Sampler()
    row = torch.tensor([[0.0, 3.0, 2.0]])
    assert s.sample(row, [1], [SamplingParams(temperature=0, frequency_penalty=2.0)], [[1]]) == [2]


def test_extreme_temperature_falls_back_to_greedy() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    assert Sampler().sample(logits, [1], [SamplingParams(temperature=1e-45, seed=1)]) == [1]
