from __future__ import annotations

from supernode.api.hashing import block_hashes, seed_hash


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
