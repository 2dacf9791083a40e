"""Where a text may be cut so that encoding the parts gives exactly the ids of encoding the whole.

A byte-level BPE tokenizer first splits text into pre-tokens with regular expressions and then merges
bytes inside each pre-token only. A cut that falls between two pre-tokens, and leaves every pre-token on
either side as it was, therefore changes no id: ``encode(a + b) == encode(a) + encode(b)``. Cut there,
a long text's parts can be encoded in parallel (``encode_batch``) and cached one by one, so a prompt
that changes in one paragraph re-encodes that paragraph only.

Cuts are offered only for pre-tokenizers known here, with no normalizer, truncation or padding:

- ``gpt2``: ``ByteLevel`` with its own regex (``'s|'t|...| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``);
- ``llama3``: one isolating ``Split`` with the Llama 3 / cl100k regex, then ``ByteLevel`` without regex;
- ``deepseek``: the DeepSeek V3 sequence: isolating splits of digit groups ``\\p{N}{1,3}``, of CJK runs,
  then of the main regex, then ``ByteLevel`` without regex.

Any other tokenizer gets no cuts (its text is encoded whole, as before). The cut rules, each true for
every regex above (a pre-token can neither start nor end inside them, and no look-ahead sees across):

1. ``x\\n|y``: after a single newline between two printable ASCII characters (``x``, ``y`` in ``!``..``~``);
2. ``x| y``: before one space between a sentence end ``x`` (``.!?;:``) and a printable ASCII ``y``;
3. llama3, deepseek: after a run of spaces, tabs and newlines that ends in a newline, between printable
   ASCII (GPT-2's ``\\s+(?!\\S)`` would keep the run's last character apart: not there);
4. deepseek: after CJK sentence punctuation before a character of its CJK class (a CJK run starts there).

``split`` takes the first allowed cut once a chunk has ``min_chars`` characters. Cuts sit at sentence and
line ends, so after an edit (a per-user header line, a changed paragraph) the cut list usually meets the
old one again within a chunk or two, and the unchanged chunks after it are found in the cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

# The pre-tokenizer regexes recognised (as ``tokenizer.json`` spells them in ``pattern.Regex``).
GPT2_FAMILY: Final = "gpt2"
LLAMA3_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
DEEPSEEK_SPLITS: Final = (
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",  # CJK ideographs, hiragana, katakana
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+",
)
_CJK: Final = "\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff"  # the class of DEEPSEEK_SPLITS[1], spelled for Python's re

_RULE_NEWLINE: Final = r"[!-~]\n(?=[!-~])"
_RULE_SENTENCE: Final = r"[.!?;:](?= [!-~])"
_RULE_BLANK_LINES: Final = r"[!-~][ \t\n]*\n(?=[!-~])"
_RULE_CJK: Final = f"[\u3002\uff01\uff1f\uff1b\uff0c\u3001](?=[{_CJK}])"  # after CJK sentence punctuation
_CUTS: Final = {
    "gpt2": re.compile(f"{_RULE_NEWLINE}|{_RULE_SENTENCE}"),
    "llama3": re.compile(f"{_RULE_BLANK_LINES}|{_RULE_SENTENCE}"),
    "deepseek": re.compile(f"{_RULE_BLANK_LINES}|{_RULE_SENTENCE}|{_RULE_CJK}"),
}


def _regex(step: Any) -> str | None:
    """The regex of an isolating, non-inverted ``Split`` step, else None."""
    if not isinstance(step, dict) or step.get("type") != "Split" or step.get("invert"):
        return None
    if step.get("behavior") != "Isolated" or not isinstance(step.get("pattern"), dict):
        return None
    regex = step["pattern"].get("Regex")
    return regex.replace("\\u3040", "\u3040") if isinstance(regex, str) else None


def _bytelevel(step: Any, *, use_regex: bool) -> bool:
    return (isinstance(step, dict) and step.get("type") == "ByteLevel" and not step.get("add_prefix_space")
            and bool(step.get("use_regex", True)) is use_regex)


def family(spec: dict[str, Any]) -> str | None:
    """The known pre-tokenizer family of a ``tokenizer.json`` (parsed), or None: no cuts for it."""
    model = spec.get("model") or {}
    if spec.get("normalizer") or spec.get("truncation") or spec.get("padding"):
        return None
    if model.get("type") != "BPE" or model.get("dropout"):
        return None
    pre = spec.get("pre_tokenizer")
    if _bytelevel(pre, use_regex=True):
        return GPT2_FAMILY
    if not isinstance(pre, dict) or pre.get("type") != "Sequence":
        return None
    steps = list(pre.get("pretokenizers") or [])
    if not steps or not _bytelevel(steps[-1], use_regex=False):
        return None
    regexes = tuple(_regex(s) for s in steps[:-1])
    if regexes == (LLAMA3_SPLIT,):
        return "llama3"
    if regexes == DEEPSEEK_SPLITS:
        return "deepseek"
    return None


class Chunker:
    """Cuts text into parts whose encodings concatenate to the whole's, for one tokenizer family."""

    def __init__(self, family_name: str | None, min_chars: int = 512) -> None:
        if min_chars < 1:
            raise ValueError(f"min_chars: must be at least 1, got {min_chars}")
        self.family, self.min_chars = family_name, min_chars
        self._cuts = _CUTS.get(family_name) if family_name is not None else None

    @classmethod
    def for_spec(cls, spec: dict[str, Any], min_chars: int = 512) -> Chunker:
        return cls(family(spec), min_chars)

    @property
    def enabled(self) -> bool:
        return self._cuts is not None

    def cuts(self, text: str) -> list[int]:
        """Every cut position the rules allow (for tests: each must leave the ids unchanged)."""
        return [] if self._cuts is None else [m.end() for m in self._cuts.finditer(text)]

    def split(self, text: str) -> list[str]:
        """``text`` in chunks of at least ``min_chars`` characters (the last may be shorter); one chunk when
        the text is short or the family unknown."""
        if self._cuts is None or len(text) < 2 * self.min_chars:
            return [text]
        out: list[str] = []
        last, step = 0, self.min_chars
        for m in self._cuts.finditer(text, step):
            cut = m.end()
            if cut - last >= step and len(text) - cut >= step // 2:
                out.append(text[last:cut])
                last = cut
        out.append(text[last:])
        return out


# Text around every rule, for the check a tokenizer passes before its text is cut (``holds_for``).
PROBE: Final = (
    "Hello world. Next line: 42 items; done! Then? x\ny\n'\n's (a)\n[b]\n1\n2 3\n\nWord\n \t\nEnd.\r\nCR.\n\n\n"
    "Done;  double. \u00a0nbsp. e\u0301. 99. 1234567 89\n123\nabc. <\uff5cUser\uff5c> <think>. "
    "\u4e2d\u6587\u3002\u65e5\u672c\u8a9e\uff0c\u30c6\u30b9\u30c8\uff01\u3042\uff1f\u4e00 ok. "
    "def f(x):\n    return x\nclass A:\n    pass\n# done.\n"
)


def holds_for(chunker: Chunker, encode: Callable[[Sequence[str]], list[list[int]]]) -> bool:
    """Whether cutting ``PROBE`` at every allowed place gives the ids of encoding it whole, with ``encode``
    (texts -> their ids) of the tokenizer at hand: a last guard before its texts are cut."""
    cuts = chunker.cuts(PROBE)
    parts = [PROBE[a:b] for a, b in zip([0, *cuts], [*cuts, len(PROBE)], strict=True)]
    whole, *pieces = encode([PROBE, *parts])
    return bool(cuts) and [i for ids in pieces for i in ids] == whole
