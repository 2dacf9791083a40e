"""supernode.api.strictjson and supernode.api.requestlimits: the rules router and engine share."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supernode.api.requestlimits import MaxTokensError, prompt_byte_bound, resolve_max_tokens
from supernode.api.strictjson import Limits, StrictJSONError, loads_strict


@pytest.mark.parametrize(("raw", "says"), [
    (b'{"a": NaN}', "non-finite"),
    (b'{"a": [Infinity]}', "non-finite"),
    (b'{"a": -Infinity}', "non-finite"),
    (b'{"a": 1e999}', "non-finite"),
    (b'{"a": ' + b"1" * 65 + b"}", "digits"),
    (b'{"a": -' + b"1" * 10_000 + b"}", "digits"),
    (b"[" * 65 + b"]" * 65, "nested"),
    (b"[" * 200_000 + b"]" * 200_000, "nested"),
    (b'{"a": "\\ud800"}', "surrogate"),
    (b'{"a": "ok \\udfff ok"}', "surrogate"),
    (b'{"\\ud83d": 1}', "surrogate"),
    (b'{"a": "\xff"}', "UTF-8"),
    (b'{"a": 1,}', "invalid JSON"),
])
def test_what_is_refused(raw: bytes, says: str) -> None:
    with pytest.raises(StrictJSONError, match=says):
        loads_strict(raw)


def test_what_is_accepted() -> None:
    assert loads_strict(b'{"emoji": "\\ud83d\\ude00", "n": ' + b"9" * 64 + b', "f": 1.5e300}') == {
        "emoji": "\U0001f600", "n": int("9" * 64), "f": 1.5e300}
    assert loads_strict("[" * 64 + "]" * 64) is not None
    assert loads_strict(b"[1, 2]", Limits(max_depth=1)) == [1, 2]
    with pytest.raises(StrictJSONError, match="at \\$\\.a\\[1\\]"):  # errors say where
        loads_strict(b'{"a": [1, {"b": 1e999}]}')


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                    | st.text(), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                             max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_loads_strict_either_returns_the_value_or_raises_strict_json_error(value: object) -> None:
    raw = json.dumps(value, allow_nan=True, ensure_ascii=True).encode()  # surrogates become \\u escapes
    try:
        out = loads_strict(raw)
    except StrictJSONError:
        return
    assert json.dumps(out, ensure_ascii=False).encode("utf-8")  # whatever passed encodes as UTF-8
    assert not any(isinstance(x, float) and not math.isfinite(x) for x in _leaves(out))


def _leaves(v: object) -> list[object]:
    if isinstance(v, dict):
        return [x for k in v.values() for x in _leaves(k)]
    if isinstance(v, list):
        return [x for k in v for x in _leaves(k)]
    return [v]


def test_one_max_tokens_rule() -> None:
    assert resolve_max_tokens(None, None, default=100, limit=50) == 50
    assert resolve_max_tokens(None, None, default=None, limit=50) is None
    assert resolve_max_tokens(7, None, default=100, limit=50) == 7
    assert resolve_max_tokens(None, 9, default=100, limit=50) == 9
    assert resolve_max_tokens(9, 9, default=100, limit=50) == 9
    bad = (((8, 9), "max_completion_tokens"), ((51, None), "max_tokens"), ((None, 0), "max_completion_tokens"))
    for args, param in bad:
        with pytest.raises(MaxTokensError) as err:
            resolve_max_tokens(*args, default=1, limit=50)
        assert err.value.param == param


def test_prompt_byte_bound() -> None:
    assert prompt_byte_bound(1000, 64) == 64_000 and prompt_byte_bound(0, 0) == 1
