"""Strict JSON for request bodies (pure; shared by the router and the engine).

``json.loads`` accepts things that later turn into 500s: ``NaN``/``Infinity`` and ``1e999`` (non-finite
floats the engine cannot sample with), integers with thousands of digits, nesting deep enough to hit
the recursion limit, and ``\\ud800`` escapes that decode to lone surrogates (which then fail to encode
as UTF-8 deep inside tokenisation or logging). ``loads_strict`` refuses all of them up front with
``StrictJSONError`` (a ValueError whose message names the problem and where), so each API can answer
400 in its own error shape.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64  # objects/arrays nested deeper than this are refused
MAX_INT_DIGITS = 64  # integers with more decimal digits are refused

# A lone surrogate can only come from a \uD800-\uDFFF escape (raw surrogates are invalid UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class StrictJSONError(ValueError):
    """The body is not strict JSON; ``path`` points at the offending value (``$`` = the root)."""

    def __init__(self, message: str, path: str = "$"):
        super().__init__(f"{message} (at {path})" if path != "$" else message)
        self.path = path


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = MAX_DEPTH
    max_int_digits: int = MAX_INT_DIGITS


def _no_constants(name: str) -> Any:
    raise StrictJSONError(f"non-finite number {name} is not allowed")


def loads_strict(raw: bytes | str, limits: Limits = Limits()) -> Any:
    """Parse UTF-8 JSON text; raise StrictJSONError for anything not strict (see module doc)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJSONError(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
        maybe_surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    else:
        text = raw
        maybe_surrogates = "\\u" in raw or _SURROGATE.search(raw) is not None
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise StrictJSONError(f"JSON nested deeper than {limits.max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except StrictJSONError:
        raise
    except ValueError as exc:  # e.g. Python's own limit on int digits
        raise StrictJSONError(f"invalid JSON: {exc}") from None
    check(data, limits, surrogates=maybe_surrogates)
    return data


def check(data: Any, limits: Limits = Limits(), *, surrogates: bool = True) -> None:
    """Walk parsed JSON (iteratively) and enforce depth, integer size, finiteness and, when asked,
    the absence of lone surrogates in keys and strings. Paths are built only for containers."""
    bound = 10**limits.max_int_digits

    def scalar(value: Any, path: str, key: object) -> None:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
        if isinstance(value, str):
            if surrogates and _SURROGATE.search(value):
                raise StrictJSONError("a string contains a lone UTF-16 surrogate", where)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int):
            if not -bound < value < bound:
                raise StrictJSONError(f"integer with more than {limits.max_int_digits} digits", where)
        elif isinstance(value, float) and not math.isfinite(value):
            raise StrictJSONError("non-finite number (out of the float range)", where)

    if not isinstance(data, dict | list):
        scalar(data, "$", "")
        return
    stack: list[tuple[dict[str, Any] | list[Any], int, str]] = [(data, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limits.max_depth:
            raise StrictJSONError(f"JSON nested deeper than {limits.max_depth} levels", path)
        items: Any = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if surrogates and isinstance(k, str) and _SURROGATE.search(k):
                raise StrictJSONError("a key contains a lone UTF-16 surrogate", path)
            if isinstance(v, dict | list):
                child = f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}"
                stack.append((v, depth + 1, child if len(child) < 200 else path))
            else:
                scalar(v, path, k)
