"""Chart: the router->engine token and group key Secret, who gets it, and the engines' NetworkPolicy."""

from __future__ import annotations

import base64
from typing import Any

from helm_chart_support import NAMESPACE, find, one

from supernode.api import constants as C

NP_ON: dict[str, Any] = {"networkPolicy": {"enabled": True}}


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def _ref(env: dict[str, Any], name: str) -> tuple[str, str]:
    ref = env[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_engine_auth_secret_is_generated_and_wired_to_router_and_operator(render: Any) -> None:
    objs = render({})
    secret = one(objs, "Secret", "-engine-auth")
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {"engine-token", "group-key"} and all(len(v) == 48 for v in values.values())
    assert values["engine-token"] != values["group-key"]
    name = secret["metadata"]["name"]
    router, operator = _env(one(objs, "Deployment", "-router")), _env(one(objs, "Deployment", "-operator"))
    assert _ref(router, "SUPERNODE_ENGINE_TOKEN") == (name, "engine-token")
    assert "SUPERNODE_GROUP_KEY" not in router, "the router never sees the group key"
    assert _ref(operator, "SUPERNODE_ENGINE_TOKEN") == (name, "engine-token")
    assert _ref(operator, "SUPERNODE_GROUP_KEY") == (name, "group-key")


def test_an_existing_secret_is_used_as_is_and_auth_can_be_off(render: Any) -> None:
    objs = render({"engineAuth": {"existingSecret": "my-engine-auth"}})
    assert not find(objs, "Secret", "-engine-auth")
    assert _ref(_env(one(objs, "Deployment", "-router")), "SUPERNODE_ENGINE_TOKEN") == ("my-engine-auth",
                                                                                       "engine-token")
    off = render({"engineAuth": {"enabled": False}})
    assert not find(off, "Secret", "-engine-auth")
    assert "SUPERNODE_ENGINE_TOKEN" not in _env(one(off, "Deployment", "-router"))
    assert "SUPERNODE_GROUP_KEY" not in _env(one(off, "Deployment", "-operator"))


def test_prometheus_scrapes_engines_with_the_token(render: Any) -> None:
    objs = render({"monitoring": {"serviceMonitor": {"enabled": True}}})
    (endpoint,) = one(objs, "PodMonitor", "-engines")["spec"]["podMetricsEndpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {
        "name": one(objs, "Secret", "-engine-auth")["metadata"]["name"], "key": "engine-token"}}


def _engine_policies(objs: Any) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["namespace"]: p for p in find(objs, "NetworkPolicy", "-engines")}


def test_engine_pods_accept_only_the_router_and_their_peers(render: Any) -> None:
    objs = render(NP_ON)
    policies = _engine_policies(objs)
    assert set(policies) == {NAMESPACE}  # cluster-wide watch, no list: the release namespace
    spec = policies[NAMESPACE]["spec"]
    engine_labels = {"app.kubernetes.io/managed-by": "supernode-operator", "app.kubernetes.io/component": "engine"}
    assert spec["podSelector"] == {"matchLabels": engine_labels} and spec["policyTypes"] == ["Ingress"]
    http, kv_events = spec["ingress"]
    assert http["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert kv_events["ports"] == [{"port": C.PORT_KV_EVENTS, "protocol": "TCP"},
                                  {"port": C.PORT_KV_REPLAY, "protocol": "TCP"}]
    assert kv_events["from"] == http["from"]  # the routers only
    (router_peer,) = http["from"]
    router_pod = one(objs, "Deployment", "-router")["spec"]["template"]["metadata"]["labels"]
    selector = router_peer["podSelector"]["matchLabels"]
    assert selector.items() <= router_pod.items(), "the peer selector matches the router pods"
    assert router_peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    args = one(objs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--group-network-policies" in args  # the operator adds the per-group peer policies
    assert not _engine_policies(render({}))  # networkPolicy.enabled=false: nothing
    off = render({"networkPolicy": {"enabled": True, "engines": {"enabled": False}}})
    assert not _engine_policies(off)
    assert "--group-network-policies" not in one(off, "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_engine_policies_follow_the_watched_namespaces(render: Any) -> None:
    watched = render({**NP_ON, "operator": {"watchNamespaces": ["llm", "batch"]}})
    assert set(_engine_policies(watched)) == {"llm", "batch"}
    listed = render({"networkPolicy": {"enabled": True, "engines": {
        "namespaces": ["inference"], "metricsFrom": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]}}})
    (policy,) = _engine_policies(listed).values()
    assert policy["metadata"]["namespace"] == "inference"
    assert policy["spec"]["ingress"][0]["from"][1] == {"namespaceSelector": {"matchLabels": {"team": "obs"}}}
