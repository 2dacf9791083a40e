"""Model resolution and the served mode (pure), with DeepSeek's semantics.

- The mode fields of a body are read by `supernode.api.modes.requested_mode`, the rule the engine
  applies too; a ModeFieldError from it names the field.
- Aliases (`deepseek-chat` = flash non-think, `deepseek-reasoner` = flash think) imply a mode when
  the request names none; fnmatch patterns (`claude-opus*` → pro) map foreign model names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from supernode.api.models import Mode
from supernode.api.modes import ModeFieldError, requested_mode
from supernode.router.config import AliasTarget


class UnknownModel(LookupError):
    def __init__(self, model: str):
        super().__init__(f"The model `{model}` does not exist or is not served here")
        self.model = model


@dataclass(frozen=True, slots=True)
class Resolved:
    model: str  # canonical served model name
    mode: Mode


def resolve_model(
    name: str,
    *,
    aliases: Mapping[str, AliasTarget],
    patterns: Mapping[str, str],
    served: Iterable[str],
    served_aliases: Mapping[str, str],
) -> tuple[str, Mode | None]:
    """Map a client's model name to (canonical model, mode implied by an alias or None)."""
    served_set = set(served)
    if name in served_set:
        return name, None
    if name in aliases:
        target = aliases[name]
        return target.model, target.mode
    if name in served_aliases:
        return served_aliases[name], None
    for pattern, model in patterns.items():
        if fnmatch.fnmatchcase(name, pattern):
            return model, None
    raise UnknownModel(name)


def resolve(
    body: Mapping[str, Any],
    *,
    anthropic: bool,
    aliases: Mapping[str, AliasTarget],
    patterns: Mapping[str, str],
    served: Iterable[str],
    served_aliases: Mapping[str, str],
    default_mode: Mode = Mode.THINK_HIGH,
) -> Resolved:
    """Resolve model and mode: explicit request fields > alias-implied mode > default."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ModeFieldError("model is required and must be a string", "model")
    model, alias_mode = resolve_model(
        name, aliases=aliases, patterns=patterns, served=served, served_aliases=served_aliases
    )
    explicit = requested_mode(body, shape="anthropic" if anthropic else "openai")
    return Resolved(model=model, mode=explicit or alias_mode or default_mode)

