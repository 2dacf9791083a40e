"""Per-group Secret: the group's store secret and the router->engine token, as engine env (pure).

The store secret of a group is HMAC-SHA256(operator group key, "<namespace>/<deployment uid>/<group
name>"): deterministic, so every reconcile renders the same Secret (no churn, no state to keep), yet
different for every group and unknown to anyone without the operator's key. The engine token is the
one the router sends (the chart keeps both in one Secret in the release namespace; engine pods live in
other namespaces and can only read Secrets of their own, hence the copy per group).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from supernode.api import constants as C

KEY_GROUP_SECRET = "group-secret"  # Secret data key: the group's store secret
KEY_ENGINE_TOKEN = "engine-token"  # Secret data key: the router->engine bearer token
ENV_VLLM_API_KEY = "VLLM_API_KEY"  # vLLM's own bearer-token setting (same token)


@dataclass(frozen=True, slots=True)
class GroupKeys:
    group_key: bytes = field(default=b"", repr=False)  # SUPERNODE_GROUP_KEY (operator only)
    engine_token: str = field(default="", repr=False)  # SUPERNODE_ENGINE_TOKEN (router + engines)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GroupKeys | None:
        env = os.environ if environ is None else environ
        keys = cls(env.get(C.ENV_GROUP_KEY, "").encode(), env.get(C.ENV_ENGINE_TOKEN, ""))
        return keys if keys.group_key or keys.engine_token else None

    def fingerprint(self) -> str:
        """Part of the Secret's name: new keys give new Secrets (and a rolling restart), never stale ones."""
        return hashlib.sha256(self.group_key + b"\0" + self.engine_token.encode()).hexdigest()[:8]

    def secret_name(self, group_name: str) -> str:
        return f"{group_name}-{self.fingerprint()}"

    def group_secret(self, namespace: str, uid: str, group_name: str) -> str:
        return hmac.new(self.group_key, f"{namespace}/{uid}/{group_name}".encode(), hashlib.sha256).hexdigest()

    def secret_data(self, namespace: str, uid: str, group_name: str) -> dict[str, str]:
        values = {}
        if self.group_key:
            values[KEY_GROUP_SECRET] = self.group_secret(namespace, uid, group_name)
        if self.engine_token:
            values[KEY_ENGINE_TOKEN] = self.engine_token
        return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def _ref(name: str, secret: str, key: str) -> dict[str, Any]:
    # Not optional: a pod whose Secret is missing does not start (visible) instead of running unprotected.
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def secret_env(secret_name: str, engine: str, keys: GroupKeys) -> list[dict[str, Any]]:
    """Env entries reading the group Secret, for the keys the operator was given."""
    env = []
    if engine == "builtin" and keys.group_key:
        env.append(_ref(C.ENV_GROUP_SECRET, secret_name, KEY_GROUP_SECRET))
    if keys.engine_token and engine in ("builtin", "vllm"):  # vLLM checks the same bearer token
        env.append(_ref(C.ENV_ENGINE_TOKEN if engine == "builtin" else ENV_VLLM_API_KEY, secret_name, KEY_ENGINE_TOKEN))
    return env  # sglang / mindie: no token check of their own (the NetworkPolicy still applies)


def secret_object(meta: dict[str, Any], keys: GroupKeys, uid: str) -> dict[str, Any]:
    """The group Secret; ``meta`` is the group's object metadata (namespace, labels, owner; named like the group)."""
    group = meta["name"]
    data = keys.secret_data(meta["namespace"], uid, group)
    meta = {**meta, "name": keys.secret_name(group)}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}


def referenced_secrets(workload: dict[str, Any]) -> set[str]:
    """Names of the Secrets a workload's pod templates read env from (to remove those a key change replaced)."""
    spec = workload.get("spec") or {}
    lws = spec.get("leaderWorkerTemplate") or {}
    templates = [spec.get("template"), lws.get("leaderTemplate"), lws.get("workerTemplate")]
    return {ref["name"] for t in templates if t for c in (t.get("spec") or {}).get("containers", [])
            for e in c.get("env", []) if (ref := (e.get("valueFrom") or {}).get("secretKeyRef"))}
