"""Cutting long prompt text where the tokenizer splits anyway changes no token id (supernode.api.tokenchunks).

Checked two ways for each known pre-tokenizer family: the pre-tokens of the parts are the whole's (a
direct check that needs no merge to show a difference) and the ids of the parts concatenate to the
whole's; over generated prose, code, numbers, CJK and JSON and over random strings made of the characters
the rules look at (spaces, newlines, CR, tabs, digits, punctuation, CJK, marks, emoji, control-token
lookalikes).
"""

from __future__ import annotations

import json
import random
import re

import pytest
from tokenizer_builders import FAMILIES, mixed_text, train
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors

from supernode.api import chattokens as T
from supernode.api import tokenchunks
from supernode.api.prompttokens import Piece, PieceCache, PromptTokenizer
from supernode.api.tokenchunks import PROBE, Chunker, family

_TRICKY = ["a", "Z", "q", "0", "7", ".", "!", "?", ";", ":", ",", "'", "s", "t", " ", " ", " ", "\n", "\n", "\t",
           "\r", "\u00a0", "\u3000", "中", "文", "。", "\uff0c", "ー", "ぁ", "²", "é", "\u0301", "🙂", "<", "｜", "_",
           "-", "(", ")", "\u200b", "€", "Ω", "\u2028", "\x1f", T.USER, T.THINK_OPEN]


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {f: train(f, 2500, 60_000, seed=1) for f in FAMILIES}


def _texts() -> list[str]:
    rng = random.Random(7)
    fuzz = ["".join(rng.choice(_TRICKY) for _ in range(rng.randint(20, 160))) for _ in range(400)]
    return fuzz + ["".join(mixed_text(seed, 3000)) for seed in range(6)]


def _pretokens(tok: Tokenizer, text: str) -> list[str]:
    assert tok.pre_tokenizer is not None
    return [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)]


@pytest.mark.parametrize("fam", FAMILIES)
def test_every_allowed_cut_keeps_pretokens_and_ids(tokenizers: dict[str, Tokenizer], fam: str) -> None:
    tok = tokenizers[fam]
    chunker = Chunker(fam)
    checked = []
    for text in _texts():
        cuts = chunker.cuts(text)
        whole = _pretokens(tok, text)
        for c in cuts:
            assert _pretokens(tok, text[:c]) + _pretokens(tok, text[c:]) == whole, (fam, text[max(0, c - 12): c + 12])
        if cuts:  # all cuts at once, through the ids
            parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            got = [i for enc in tok.encode_batch(parts, add_special_tokens=False) for i in enc.ids]
            assert got == tok.encode(text, add_special_tokens=False).ids, fam
        checked.append(len(cuts))
    assert sum(checked[:400]) > 100 and sum(checked[400:]) > 100  # cuts are found in both kinds of text


def test_a_cut_the_rules_refuse_would_change_gpt2_pretokens(tokenizers: dict[str, Tokenizer]) -> None:
    """GPT-2 keeps the last whitespace before a word apart: after blank lines is no cut for it (rule 3 is not
    its), while DeepSeek's regex keeps the run whole there."""
    text, cut = "end.\n\nNext", 6
    gpt2, deepseek = tokenizers["gpt2"], tokenizers["deepseek"]
    assert _pretokens(gpt2, text[:cut]) + _pretokens(gpt2, text[cut:]) != _pretokens(gpt2, text)
    assert cut not in Chunker("gpt2").cuts(text) and cut in Chunker("deepseek").cuts(text)
    assert _pretokens(deepseek, text[:cut]) + _pretokens(deepseek, text[cut:]) == _pretokens(deepseek, text)


def test_only_known_pre_tokenizers_get_cuts(tokenizers: dict[str, Tokenizer]) -> None:
    for fam, tok in tokenizers.items():
        assert family(json.loads(tok.to_str())) == fam
    base = json.loads(tokenizers["deepseek"].to_str())
    changed = json.loads(json.dumps(base))
    changed["pre_tokenizer"]["pretokenizers"][2]["pattern"]["Regex"] += "|x"
    assert family(changed) is None
    changed = json.loads(json.dumps(base))
    changed["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious"
    assert family(changed) is None
    other = train("gpt2", 400, 20_000)
    other.normalizer = normalizers.NFKC()
    assert family(json.loads(other.to_str())) is None
    other = train("gpt2", 400, 20_000)
    other.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert family(json.loads(other.to_str())) is None
    other.pre_tokenizer = pre_tokenizers.Metaspace()
    assert family(json.loads(other.to_str())) is None
    other = train("gpt2", 400, 20_000)
    other.enable_truncation(64)
    assert family(json.loads(other.to_str())) is None
    assert Chunker(None).split("x. " * 2000) == ["x. " * 2000]
    with pytest.raises(ValueError, match="min_chars"):
        Chunker("gpt2", 0)


@pytest.mark.parametrize("fam", FAMILIES)
def test_chunked_pieces_equal_plain_encoding_cold_warm_and_edited(tokenizers: dict[str, Tokenizer], fam: str) -> None:
    tok = PromptTokenizer(tokenizers[fam], chunk_chars=256, fast=False)  # the library path caches chunks
    whole = PromptTokenizer(tokenizers[fam], chunk_chars=0, fast=False)
    system = "".join(mixed_text(40, 6000))
    pieces = [Piece(T.BOS, True), Piece(system), Piece(T.USER, True), Piece("".join(mixed_text(41, 1500))),
              Piece(T.ASSISTANT, True), Piece(T.THINK_OPEN, True)]
    expected = whole.encode_pieces(pieces)
    assert expected == [tok.special_id(T.BOS), *whole.encode_text(system), tok.special_id(T.USER),
                        *whole.encode_text(pieces[3].text), tok.special_id(T.ASSISTANT), tok.special_id(T.THINK_OPEN)]
    assert len(tok.chunker.split(system)) > 4
    cache = PieceCache(min_chars=64)
    assert tok.encode_pieces(pieces) == expected  # no cache
    assert tok.encode_pieces(pieces, cache) == expected  # cold cache
    assert tok.encode_pieces(pieces, cache) == expected  # whole pieces from the cache
    # one paragraph in the middle changes: the chunks before it come from the cache, the ids stay exact
    middle = len(system) // 2
    edited = [*pieces[:1], Piece(system[:middle] + " Today is 2026-12-03, a Thursday." + system[middle:]), *pieces[2:]]
    hits = cache.hits
    assert tok.encode_pieces(edited, cache) == whole.encode_pieces(edited)
    assert cache.hits - hits >= 2
    fast = PromptTokenizer(tokenizers[fam], chunk_chars=256)  # takes texts whole: the same ids
    assert fast.encode_pieces(pieces, cache) == expected and fast.encode_pieces(edited) == whole.encode_pieces(edited)


def test_encode_text_with_a_bos_template_is_exact() -> None:
    raw = train("deepseek", 800, 40_000)
    raw.post_processor = processors.TemplateProcessing(single=f"{T.BOS} $A", special_tokens=[(T.BOS, 0)])
    tok, whole = PromptTokenizer(raw, chunk_chars=128), PromptTokenizer(raw, chunk_chars=0)
    text = "".join(mixed_text(5, 4000))
    assert tok.encode_text(text, add_special_tokens=True)[0] == 0
    assert tok.encode_text(text, add_special_tokens=True) == whole.encode_text(text, add_special_tokens=True)
    assert tok.encode_text(text) == whole.encode_text(text) == raw.encode(text, add_special_tokens=False).ids
    assert len(tok.chunker.split(text)) > 4


def test_a_tokenizer_whose_cuts_do_not_hold_on_the_probe_gets_none(
    tokenizers: dict[str, Tokenizer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before a tokenizer's text is cut, the cuts are tried on a probe text around every rule; a recognised
    family that does not behave as its rules say (here: a wrong rule for GPT-2) is encoded whole."""
    for fam, tok in tokenizers.items():
        assert len(Chunker(fam).cuts(PROBE)) >= 10
        assert PromptTokenizer(tok).chunker.enabled, fam
    monkeypatch.setitem(tokenchunks._CUTS, "gpt2", re.compile(r"\n(?=\n)|[^ ](?= )"))
    assert not PromptTokenizer(tokenizers["gpt2"]).chunker.enabled
    assert PromptTokenizer(tokenizers["deepseek"]).chunker.enabled
