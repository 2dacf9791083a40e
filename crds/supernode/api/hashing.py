"""Prefix-cache block hashing: the one definition shared by the engine and the router.

A prompt's tokens are cut into full blocks of ``block_size`` tokens. Block *i*'s hash chains the
hash of block *i-1* with block *i*'s tokens, so equal hashes mean equal prefixes. The chain is
seeded with the model name, so two models never share cache entries. Partial trailing blocks are
not hashed (they cannot be shared yet).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence

from supernode.api.constants import DEFAULT_BLOCK_SIZE

_MASK64 = (1 << 64) - 1


def seed_hash(model_name: str) -> int:
    """The chain's root value for a model."""
    return int.from_bytes(hashlib.blake2b(model_name.encode(), digest_size=8).digest(), "little")


def chain_hash(parent: int, block_tokens: Sequence[int]) -> int:
    """Hash of one full block given its parent's hash (64-bit, stable across processes)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(struct.pack("<Q", parent & _MASK64))
    h.update(struct.pack(f"<{len(block_tokens)}q", *block_tokens))
    return int.from_bytes(h.digest(), "little")


def iter_block_hashes(
    tokens: Sequence[int], model_name: str, block_size: int = DEFAULT_BLOCK_SIZE
) -> Iterator[int]:
    """Yield the chained hash of every full block of ``tokens`` (each equal to ``chain_hash`` of its block).

    The tokens are packed once and hashed block by block from that buffer: the same bytes ``chain_hash``
    hashes, at a fraction of the cost for long prompts (the router hashes every prompt it routes).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    full = len(tokens) - len(tokens) % block_size
    if not full:
        return
    data = memoryview(struct.pack(f"<{full}q", *tokens[:full]))
    step, parent = 8 * block_size, seed_hash(model_name)
    for start in range(0, len(data), step):
        h = hashlib.blake2b(struct.pack("<Q", parent & _MASK64), digest_size=8)
        h.update(data[start : start + step])
        parent = int.from_bytes(h.digest(), "little")
        yield parent


def block_hashes(
    tokens: Sequence[int], model_name: str, block_size: int = DEFAULT_BLOCK_SIZE
) -> list[int]:
    """The chained hashes of every full block of ``tokens``."""
    return list(iter_block_hashes(tokens, model_name, block_size))


def text_units(text: str) -> list[int]:
    """Approximate token stream for a router that has no tokenizer: UTF-8 bytes.

    Hashing these with the same chain gives the router an *approximate* prefix index whose
    hashes are consistent with each other (not with the engine's token hashes).
    """
    return list(text.encode())
