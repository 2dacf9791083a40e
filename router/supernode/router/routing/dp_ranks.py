"""Data-parallel ranks behind one endpoint: each keeps its own KV cache and publishes its own KV events.

vLLM and SGLang run one scheduler (and one prefix cache) per data-parallel rank and open one KV event
publisher per rank, rank r on the configured PUB and replay ports plus r (``offset_endpoint_port`` in
vllm/distributed/kv_events.py and sglang/srt/disaggregation/kv_events.py). The precise index keeps
each rank apart under ``rank_key(endpoint, r)``; a request goes to the endpoint as usual and, when one
rank holds its prefix, names that rank the way the engine takes it:

- vLLM: the ``X-data-parallel-rank`` header (its OpenAI server's ``_get_data_parallel_rank``);
- SGLang: the ``data_parallel_rank`` request field (newer versions read it as ``routed_dp_rank``).

Engines with no such hint get the expected reuse instead (the mean over ranks: the engine's own
balancer picks the rank), see ``PreciseIndex.match``.
"""

from __future__ import annotations

from collections.abc import Sequence

from supernode.api.models import EngineType

RANK_HEADER = "X-data-parallel-rank"  # vLLM
RANK_FIELD = "data_parallel_rank"  # SGLang (GenerateReqInput / ChatCompletionRequest)
PINNABLE = frozenset({EngineType.VLLM, EngineType.SGLANG})  # engines a request can name a rank to


def rank_key(endpoint: str, rank: int) -> str:
    """The precise index's key for one rank of a data-parallel endpoint."""
    return f"{endpoint}#dp{rank}"


def offset_port(address: str, rank: int) -> str:
    """``tcp://host:port`` with the port moved up by ``rank`` (what the engines bind rank r's sockets on)."""
    if not address or rank == 0:
        return address
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + rank}"


def pick_rank(blocks: Sequence[int], pinned: Sequence[int], abs_threshold: float, rel_threshold: float) -> int | None:
    """The rank to send a request to: the one holding most of its prefix (``blocks``: leading blocks per
    rank), skipping ranks overloaded against the least loaded one by the load guard's rule, counted in
    requests this router pinned there (``pinned``); None when no eligible rank holds any of it (the
    engine's own balancer then picks, as it does for unpinned requests)."""
    least = min(pinned, default=0)
    best: int | None = None
    for r, n in enumerate(blocks):
        load = pinned[r]
        if n <= 0 or (load - least > abs_threshold and load > rel_threshold * least):
            continue
        if best is None or n > blocks[best] or (n == blocks[best] and load < pinned[best]):
            best = r
    return best


def with_rank(engine: EngineType, payload: bytes, rank: int | None) -> tuple[bytes, dict[str, str]]:
    """The JSON body and extra headers that send ``payload`` to data-parallel rank ``rank`` of ``engine``.
    The SGLang field goes last, so it wins over one a client sent (JSON objects keep the last duplicate)."""
    if rank is None or engine not in PINNABLE:
        return payload, {}
    if engine == EngineType.VLLM:
        return payload, {RANK_HEADER: str(rank)}
    body = payload.rstrip()
    if not body.endswith(b"}"):  # not a JSON object: leave it to the engine to refuse
        return payload, {}
    head = body[:-1].rstrip()
    sep = b"" if head.endswith(b"{") else b","
    return head + sep + b'"' + RANK_FIELD.encode() + b'":' + str(rank).encode() + b"}", {}
