"""Request preparation (pure-ish): auth header, body limit, parse, model + mode, pools, engine body."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from supernode.api.constants import HEADER_SESSION_ID
from supernode.api.modes import TEMPLATE_MODE_KEYS, ModeFieldError, template_kwargs
from supernode.api.requestlimits import prompt_byte_bound
from supernode.router.apis.common import ParsedRequest, load_json
from supernode.router.config import RouterConfig
from supernode.router.contracts import PoolKey, Tenant
from supernode.router.errors import InvalidRequest, ModelNotFound, ModeNotOffered, PayloadTooLarge
from supernode.router.modes import Resolved, UnknownModel, resolve
from supernode.router.routing.prefix_index import LazyRequestHashes
from supernode.router.routing.state import EndpointTable

Parser = Callable[..., ParsedRequest]
SpillTargets = Callable[[Sequence[PoolKey]], Sequence[PoolKey]]  # the tenant's allowed pools, spill targets after


def api_key(request: Request) -> str | None:
    """`x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI)."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(slots=True)
class Prepared:
    parsed: ParsedRequest
    resolved: Resolved
    pools: list[PoolKey]
    session: str | None
    block_hashes: Sequence[int]  # LazyRequestHashes: computed only when a reader needs them
    prompt_tokens_estimate: int  # the real prompt token count when prompt_token_ids is known
    max_tokens: int  # per choice, resolved once (shared rule); admission reserves n times it, the engine is
    # sent it or less
    # The prompt as the engine will tokenize it (same tokenizer and template), or None without a tokenizer.
    prompt_token_ids: tuple[int, ...] | None = None
    token_block_hashes: tuple[int, ...] = ()  # engine-compatible block hashes of prompt_token_ids


def offered_pools(resolved: Resolved, table: EndpointTable, spill: SpillTargets | None) -> list[PoolKey]:
    """The pools a request may be admitted to: its own, when some deployment of the model offers the
    mode; otherwise the spill-over targets the tenant is allowed that are offered (the response then
    names the mode that served in x-supernode-mode), else ModeNotOffered naming the offered modes. A
    scaled-to-zero model with no endpoint left is taken at its word (the group that starts decides)."""
    requested = PoolKey(resolved.model, resolved.mode)
    offered = table.offered_modes(resolved.model)
    if resolved.mode in offered or (not offered and resolved.model in table.cold):
        return [requested]  # a model scaled to zero announces no modes: its request waits for a group
    targets = [p for p in (spill([requested]) if spill else ()) if p != requested
               and p.mode in table.offered_modes(p.model)]
    if targets:
        return targets
    names = ", ".join(m.value for m in sorted(offered, key=list(type(resolved.mode)).index)) or "none"
    raise ModeNotOffered(f"The model `{resolved.model}` does not offer mode {resolved.mode.value}; "
                         f"offered modes: {names}")


def spill_targets(gatekeeper: object, tenant: Tenant) -> SpillTargets | None:
    """The gatekeeper's spill-over expansion for this tenant (admission's rules, tenant overrides,
    allowed models/modes), or None for a gatekeeper without spill-over (admission off)."""
    candidates = getattr(gatekeeper, "candidates", None)
    if candidates is None:
        return None
    return lambda pools: tuple(candidates(tenant, pools))


def prepare(raw: bytes, parser: Parser, *, anthropic: bool, config: RouterConfig, table: EndpointTable,
            session_header: str | None, spill: SpillTargets | None = None) -> Prepared:
    """Everything the request path decides before admission; raises RouterError subclasses (4xx)."""
    body = load_json(raw)
    models = config.models
    parsed = parser(body, max_tokens_limit=models.max_tokens_limit, default_max_tokens=models.default_max_tokens)
    served, served_aliases = table.served_models()
    try:
        resolved = resolve(parsed.mode_fields, anthropic=anthropic, aliases=config.models.aliases,
                           patterns=config.models.patterns, served=served, served_aliases=served_aliases,
                           default_mode=config.models.default_mode)
    except ModeFieldError as e:
        raise InvalidRequest(str(e), param=e.param) from None
    except UnknownModel as e:
        raise ModelNotFound(str(e)) from None
    if resolved.model not in served:
        raise ModelNotFound(f"The model `{parsed.mode_fields.get('model')}` does not exist or is not served here")
    check_prompt_fits(parsed.prompt_text, resolved.model, config,
                      param="prompt" if parsed.api == "openai-completions" else "messages")
    pools = offered_pools(resolved, table, spill)  # further spill-over (capacity) comes from admission's rules
    prefix = config.routing.prefix
    hashes = LazyRequestHashes(resolved.model, parsed.prompt_text, block_size=prefix.block_size,
                               max_blocks=prefix.max_blocks_per_request)
    return Prepared(parsed=parsed, resolved=resolved, pools=pools,
                    session=session_header or parsed.user, block_hashes=hashes,
                    prompt_tokens_estimate=max(1, len(parsed.prompt_text) // 4),
                    max_tokens=parsed.max_tokens or models.default_max_tokens)


def prepare_off_loop(raw: bytes, parser: Parser, **kw: Any) -> Prepared:
    """``prepare`` for a worker thread (a large body): the byte hashes are computed there too, since the
    approximate index learns every answered prompt (``Profile.observe``) and the event loop should not."""
    prep = prepare(raw, parser, **kw)
    len(prep.block_hashes)  # LazyRequestHashes: computes (and keeps) them all
    return prep


def check_prompt_fits(text: str, model: str, config: RouterConfig, *, param: str = "messages") -> None:
    """Refuse, before any tokenizing, prompt text with more bytes than the model's context window can
    hold even at the tokenizer's most bytes per token (supernode.api.requestlimits)."""
    models = config.models
    context = models.context_tokens.get(model, models.default_context_tokens)
    bound = prompt_byte_bound(context, models.max_bytes_per_token)
    if len(text) * 4 <= bound:  # cheap: a character is at most 4 UTF-8 bytes
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > bound:
        raise InvalidRequest(f"the prompt has {size} bytes of text, more than the {context}-token context of "
                             f"{model} can hold (at most {bound} bytes)", param=param)


def session_of(request: Request) -> str | None:
    return request.headers.get(HEADER_SESSION_ID) or None


def per_choice(granted: int, n: int) -> int:
    """The engine's max_tokens when admission granted ``granted`` completion tokens for ``n`` choices (at
    least 1 each, as for one choice: a quota nearly spent still lets a request produce a token)."""
    return max(1, granted // max(1, n))


RANK_FIELDS = ("data_parallel_rank", "routed_dp_rank")  # SGLang's request fields naming a data-parallel rank


def engine_body(parsed: ParsedRequest, pool: PoolKey, *, max_tokens: int) -> dict[str, Any]:
    """The body sent to the engine: served model name, the completion-token limit admission reserved
    (``max_tokens`` only), mode as chat_template_kwargs, usage in streams."""
    body = dict(parsed.body)
    body["model"] = pool.model
    body.pop("max_completion_tokens", None)
    for key in RANK_FIELDS:  # the router picks the data-parallel rank (routing/dp_ranks.py), not the client
        body.pop(key, None)
    body["max_tokens"] = max_tokens
    if parsed.upstream_path == "/v1/chat/completions":
        kwargs = body.get("chat_template_kwargs")
        kept = {k: v for k, v in (kwargs if isinstance(kwargs, dict) else {}).items() if k not in TEMPLATE_MODE_KEYS}
        body["chat_template_kwargs"] = {**kept, **template_kwargs(pool.mode)}  # the mode that serves, only
    if parsed.stream:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return body
