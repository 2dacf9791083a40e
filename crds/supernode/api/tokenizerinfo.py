"""What the built-in engine tells routers about its prompts (``GET /v1/tokenizer``).

With it a router encodes prompts exactly as the engine does (same ``tokenizer.json``, same chat template)
and hashes the token ids into the same prefix-cache blocks (same block size, same hash seed), so the block
size is configured once: on the engine.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

TOKENIZER_PATH = "/v1/tokenizer"


class TokenizerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="The served model name")
    hash_seed: str = Field(description="The name the block-hash chain is seeded with (supernode.api.hashing)")
    block_size: int = Field(ge=1, description="Tokens per KV block (prefix-cache block)")
    template: str = Field(description="Chat template id and version (supernode.api.chattemplate.TEMPLATE_ID)")
    digest: str = Field(description="SHA-256 of `tokenizer` (supernode.api.prompttokens.tokenizer_digest)")
    tokenizer: str = Field(description="The tokenizer.json text")

    @property
    def etag(self) -> str:
        """Changes with anything that changes the router's token ids or block hashes."""
        key = "\n".join((self.digest, str(self.block_size), self.template, self.hash_seed))
        return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
