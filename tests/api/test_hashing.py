from __future__ import annotations

import random

from supernode.api.hashing import block_hashes, chain_hash, seed_hash


def test_equal_prefixes_share_hashes_and_diverge_after() -> None:
    a = block_hashes(list(range(40)), "m", 16)
    b = block_hashes([*range(32), 99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89, 88, 87, 86, 85, 84], "m", 16)
    assert len(a) == 2 and len(b) == 3
    assert a[:2] == b[:2]


def test_partial_block_is_not_hashed() -> None:
    assert block_hashes(list(range(15)), "m", 16) == []


def test_model_name_seeds_the_chain() -> None:
    assert block_hashes(list(range(16)), "a") != block_hashes(list(range(16)), "b")
    assert seed_hash("a") != seed_hash("b")


def test_hash_depends_on_parent() -> None:
    tokens = list(range(16))
    assert block_hashes(tokens * 2, "m")[1] != block_hashes(tokens, "m")[0]


def test_block_hashes_equal_the_chain_the_engine_builds_block_by_block() -> None:
    """The engine's block manager chains ``chain_hash`` one block at a time; the router hashes a whole prompt."""
    rng = random.Random(7)
    tokens = [rng.randrange(1 << 17) for _ in range(16 * 9 + 5)]
    parent, chained = seed_hash("m"), []
    for start in range(0, len(tokens) - 15, 16):
        parent = chain_hash(parent, tokens[start : start + 16])
        chained.append(parent)
    assert block_hashes(tokens, "m", 16) == chained and len(chained) == 9
