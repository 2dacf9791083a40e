"""Request bodies (parsed, then validated) and the OpenAI error shape."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from supernode.engine.core.sequence import MAX_LOGPROBS, SamplingParams

MAX_N = 16  # choices per request (each is a sequence in the batch)


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, retry_after: float = 0
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after = status, message, param, retry_after
        self.code = code or {400: "invalid_request", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)

    @property
    def type(self) -> str:
        if self.status == 429:
            return "rate_limit_error"
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(self.retry_after)))} if self.retry_after else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    n: int = 1
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    repetition_penalty: float | None = None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def unsupported(self) -> None:
        """Features the built-in engine does not implement fail loudly instead of being ignored."""
        extra = self.model_extra or {}
        checks = {
            "repetition_penalty": self.repetition_penalty not in (None, 1.0),
            "best_of": extra.get("best_of") not in (None, 1),
            "suffix": bool(extra.get("suffix")),
            "functions": bool(extra.get("functions")),  # the legacy spelling of tools
            "function_call": extra.get("function_call") is not None,
            "logit_bias": bool(extra.get("logit_bias")),
            "min_p": extra.get("min_p") not in (None, 0, 0.0),
            "prediction": extra.get("prediction") is not None,
            "audio": extra.get("audio") is not None,
            "modalities": extra.get("modalities") not in (None, ["text"]),
            "web_search_options": extra.get("web_search_options") is not None,
        }
        fmt = extra.get("response_format")
        checks["response_format"] = isinstance(fmt, dict) and fmt.get("type") not in (None, "text")
        for name, bad in checks.items():
            if bad:
                raise APIError(400, f"{name}: not implemented by the built-in engine", param=name, code="unsupported")
        if not 1 <= self.n <= MAX_N:
            raise APIError(400, f"n: must be in [1, {MAX_N}]", param="n")

    @abstractmethod
    def logprob_count(self) -> int | None:
        """Top alternatives per generated token, or None when log-probabilities are not asked for."""

    def prompt_logprob_count(self) -> int | None:
        """Top alternatives per prompt token (completions with ``echo``), or None."""
        return None

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        self.unsupported()
        max_tokens = self.max_tokens if self.max_tokens is not None else default_max_tokens
        if max_tokens < 1 and not (max_tokens == 0 and self.prompt_logprob_count() is not None):
            raise APIError(400, "max_tokens: must be at least 1 (0 only with echo and logprobs)", param="max_tokens")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not s for s in stop):
            raise APIError(400, "stop: strings must be non-empty", param="stop")
        try:
            return SamplingParams(
                max_tokens=max_tokens,
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=max(0, self.top_k or 0),
                seed=self.seed,
                stop=stop,
                stop_token_ids=tuple(self.stop_token_ids or ()),
                ignore_eos=self.ignore_eos,
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
                logprobs=self.logprob_count(),
                prompt_logprobs=self.prompt_logprob_count(),
            )
        except ValueError as exc:
            raise APIError(400, str(exc), param=str(exc).split(":")[0]) from exc


class ChatRequest(_Common):
    messages: list[Any] = Field(min_length=1)
    max_completion_tokens: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool = True

    def logprob_count(self) -> int | None:
        if self.logprobs not in (None, False, True):
            raise APIError(400, "logprobs: must be a boolean on /v1/chat/completions", param="logprobs")
        if self.top_logprobs is not None:
            if not self.logprobs:
                raise APIError(400, "top_logprobs: needs logprobs=true", param="top_logprobs")
            if not 0 <= self.top_logprobs <= MAX_LOGPROBS:
                raise APIError(400, f"top_logprobs: must be in [0, {MAX_LOGPROBS}]", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    return_token_ids: bool = False
    echo: bool = False

    def logprob_count(self) -> int | None:
        extra = self.model_extra or {}
        if extra.get("tools"):
            raise APIError(400, "tools: only /v1/chat/completions takes tools", param="tools", code="unsupported")
        if self.top_logprobs is not None:
            raise APIError(400, "top_logprobs: on /v1/completions use logprobs=N", param="top_logprobs")
        if self.logprobs is None:
            return None
        if isinstance(self.logprobs, bool) or not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"logprobs: must be an integer in [0, {MAX_LOGPROBS}]", param="logprobs")
        return self.logprobs

    def prompt_logprob_count(self) -> int | None:
        return self.logprob_count() if self.echo else None  # echo + logprobs: the prompt's too (eval harnesses)

    def single_prompt(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], str | list):
            if len(p) != 1:
                raise APIError(400, "prompt: batched prompts are not supported; send one", param="prompt")
            p = p[0]
        if isinstance(p, list) and not p:
            raise APIError(400, "prompt: must not be empty", param="prompt")
        return p  # type: ignore[return-value]


def parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err["loc"] else None
        raise APIError(400, f"{param or 'body'}: {err['msg']}", param=param) from exc
