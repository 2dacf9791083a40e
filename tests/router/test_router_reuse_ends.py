"""Engines that resume a cached prefix only at some blocks (V4's state snapshots): the precise index counts a
hit up to the last such block of the leading run, from the ``ends`` the built-in engine's stream names."""

from __future__ import annotations

from typing import Any

import pytest

from supernode.router.kv_events.apply import BadEvents, StreamPosition, apply_stream_record
from supernode.router.routing.precise_index import PreciseIndex

URL = "http://engine-v4"


def rec(kind: str, seq: int, hashes: list[int], ends: list[int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "seq": seq, "instance": "i1", "block_hashes": hashes, "block_size": 4}
    return out if ends is None else {**out, "ends": ends}


def test_a_match_ends_at_the_last_named_block_of_the_leading_run() -> None:
    index, pos = PreciseIndex(), StreamPosition()
    apply_stream_record(index, URL, pos, rec("snapshot", 3, [1, 2, 3, 4], ends=[2]))
    assert index.is_restricted(URL)
    assert [index.match(URL, [1, 2, 3, 4, 5][:n]) for n in range(1, 6)] == [0, 2, 2, 2, 2]
    apply_stream_record(index, URL, pos, rec("stored", 4, [5, 6], ends=[6]))
    assert index.match(URL, [1, 2, 3, 4, 5, 6]) == 6 and index.match(URL, [1, 2, 3, 4, 5, 7]) == 2
    apply_stream_record(index, URL, pos, rec("stored", 5, [], ends=[4]))  # a cached block gets a snapshot later
    assert index.match(URL, [1, 2, 3, 4, 5, 7]) == 4
    apply_stream_record(index, URL, pos, rec("removed", 6, [2]))  # evicted: the chain breaks before 4
    assert index.match(URL, [1, 2, 3, 4]) == 0
    apply_stream_record(index, URL, pos, rec("stored", 7, [2], ends=[]))  # cached again, with no snapshot
    assert index.match(URL, [1, 2, 3, 4]) == 4 and index.match(URL, [1, 2, 3]) == 0
    apply_stream_record(index, URL, pos, rec("cleared", 8, []))
    assert index.is_restricted(URL) and index.size(URL) == 0  # the engine is emptied, its rule stays
    apply_stream_record(index, URL, pos, rec("snapshot", 0, [1, 2]))  # an engine without the rule (restarted)
    assert not index.is_restricted(URL) and index.match(URL, [1, 2]) == 2


def test_unrestricted_endpoints_and_unknown_ends() -> None:
    index = PreciseIndex()
    index.store(URL, [(1, 1), (2, 2)])
    index.mark_ends(URL, [1])  # not restricted: ignored, every block ends a reusable prefix
    assert index.match(URL, [1, 2]) == 2
    index.restrict(URL, True)
    index.mark_ends(URL, [2, 99])  # 99: not held, ignored
    assert index.match(URL, [1, 2]) == 2 and index.match(URL, [1]) == 0
    index.drop(URL)
    assert not index.is_restricted(URL)


@pytest.mark.parametrize("ends", ["x", [1, "2"], [True]])
def test_malformed_ends_name_the_field(ends: Any) -> None:
    with pytest.raises(BadEvents, match="ends"):
        apply_stream_record(PreciseIndex(), URL, StreamPosition(), {**rec("snapshot", 1, [1]), "ends": ends})
