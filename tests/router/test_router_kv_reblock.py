"""Engine blocks of another size than the router's: cut into router blocks along the chain, so SGLang's
1-token pages or vLLM's 128-token blocks still give precise matches on the router's 4-token blocks here."""

from __future__ import annotations

import pytest

from supernode.api.hashing import block_hashes
from supernode.api.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch
from supernode.router.kv_events.apply import BadEvents, apply_batch
from supernode.router.kv_events.reblock import Reblocker
from supernode.router.routing.precise_index import PreciseIndex

URL, MODEL, R = "http://e", "m", 4


def pages(tokens: list[int], size: int, first: int, parent: int | None = None) -> list[BlockStored]:
    """One BlockStored per engine block of ``size`` tokens, chained (SGLang's shape; vLLM sends them together)."""
    out = []
    for i in range(0, len(tokens), size):
        out.append(BlockStored([first + i], parent, tokens[i:i + size], len(tokens[i:i + size])))
        parent = first + i
    return out


def run(index: PreciseIndex, blocks: Reblocker, *events: object) -> None:
    apply_batch(index, URL, MODEL, KVEventBatch(0.0, list(events)), blocks)  # type: ignore[arg-type]


def matched(index: PreciseIndex, tokens: list[int]) -> int:
    return index.match(URL, block_hashes(tokens, MODEL, R))


def test_one_token_pages_fill_router_blocks_and_leave_with_their_last_page() -> None:
    index, blocks = PreciseIndex(), Reblocker(R, 1000)
    run(index, blocks, *pages(list(range(10)), 1, 100))  # a radix node of 10 one-token pages
    assert matched(index, list(range(16))) == 2  # 8 tokens complete two router blocks; 2 are carried
    run(index, blocks, *pages(list(range(10, 16)), 1, 200, parent=109))  # a child node continues the carry
    assert matched(index, list(range(16))) == 4
    run(index, blocks, BlockRemoved(list(range(200, 206))))  # the child is evicted
    assert matched(index, list(range(16))) == 2
    run(index, blocks, BlockRemoved([104, 105, 106, 107, 108, 109]))  # the tail of the node: block 2 goes
    assert matched(index, list(range(16))) == 1 and index.size(URL) == 1


def test_blocks_larger_than_the_routers_stand_for_several_router_blocks() -> None:
    index, blocks = PreciseIndex(), Reblocker(R, 1000)
    tokens = list(range(30, 46))
    run(index, blocks, BlockStored([1, 2], None, tokens, 8))  # two engine blocks of 8: four router blocks
    assert matched(index, tokens) == 4 and index.size(URL) == 4
    run(index, blocks, BlockStored([3], 2, list(range(46, 54)), 8))
    assert matched(index, list(range(30, 54))) == 6
    run(index, blocks, BlockRemoved([2]))  # both router blocks it completed go with it
    assert matched(index, list(range(30, 54))) == 2
    run(index, blocks, BlockRemoved([3]))
    assert index.size(URL) == 2


def test_sizes_that_do_not_divide_carry_the_rest() -> None:
    index, blocks = PreciseIndex(), Reblocker(R, 1000)
    tokens = list(range(18))
    run(index, blocks, BlockStored([1, 2, 3], None, tokens, 6))  # 6 + 6 + 6 tokens: four router blocks + 2
    assert matched(index, [*tokens, 99, 99]) == 4
    run(index, blocks, BlockStored([4], 3, [18, 19, 20, 21, 22, 23], 6))
    assert matched(index, list(range(24))) == 6


def test_equal_sizes_match_as_without_cutting() -> None:
    tokens = list(range(12))
    plain, cut = PreciseIndex(), PreciseIndex()
    batch = KVEventBatch(0.0, [BlockStored([7, 8, 9], None, tokens, R), BlockRemoved([9])])
    apply_batch(plain, URL, MODEL, batch)
    apply_batch(cut, URL, MODEL, batch, Reblocker(R, 1000))
    assert matched(plain, tokens) == matched(cut, tokens) == 2 and plain.size(URL) == cut.size(URL) == 2


def test_a_clear_forgets_the_carried_tokens_and_unknown_parents_are_skipped() -> None:
    index, blocks = PreciseIndex(), Reblocker(R, 1000)
    run(index, blocks, *pages([1, 2], 1, 10))
    run(index, blocks, AllBlocksCleared())
    run(index, blocks, *pages([3, 4], 1, 20, parent=11))  # its parent is gone: unreachable
    assert index.size(URL) == 0 and matched(index, [1, 2, 3, 4]) == 0


def test_carried_blocks_are_bounded() -> None:
    index, blocks = PreciseIndex(), Reblocker(R, 3)
    with pytest.raises(BadEvents, match="short of a router block"):
        run(index, blocks, *(BlockStored([i], None, [i], 1) for i in range(5)))
    with pytest.raises(ValueError, match="positive"):
        Reblocker(0, 1)
