"""The router config file the chart renders is valid for the router's own config models, and it
matches the pod: listen port = container port, tenants file = the mounted Secret key, ledger on the
mounted volume. (Needs the router branches: supernode.router.config / admission / metering.)"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml
from helm_chart_support import EXAMPLES, load_values, one

from supernode.router.admission import AdmissionConfig
from supernode.router.config import parse_config
from supernode.router.metering import MeteringConfig

VARIANTS = {
    "default": {},
    "tenants+namespace": {"router": {"tenants": {"inline": "tenants: []\n", "key": "t.yaml"},
                                     "discovery": {"namespace": "llm"}}},
    "custom config": {"router": {"config": {"routing": {"max_attempts": 2},
                                            "admission": {"queue": {"maxWaitSeconds": 30}}}}},
    **{p.stem: load_values(p) for p in EXAMPLES},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_router_config_is_valid_and_matches_the_pod(render: Any, variant: str) -> None:
    objects = render(VARIANTS[variant])
    raw = yaml.safe_load(one(objects, "ConfigMap", "-router")["data"]["router.yaml"])
    config = parse_config(raw)
    admission, metering = config.admission, config.metering
    assert isinstance(admission, AdmissionConfig), "admission control must always be on"
    assert isinstance(metering, MeteringConfig), "usage must always be metered to the ledger"

    pod = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert config.server.host == "0.0.0.0" and config.server.port == ports["http"]
    assert config.discovery.type == "kubernetes" and config.discovery.http_port_name == "http"
    assert "--config=/etc/supernode/router/router.yaml" in container["args"]
    assert mounts["config"] == "/etc/supernode/router"
    assert PurePosixPath(metering.ledger_path).parent == PurePosixPath(mounts["ledger"])
    if admission.tenants_file is None:
        assert "tenants" not in mounts
    else:
        assert PurePosixPath(admission.tenants_file).parent == PurePosixPath(mounts["tenants"])
        volume = {v["name"]: v for v in pod["volumes"]}["tenants"]["secret"]
        assert volume["items"][0]["path"] == PurePosixPath(admission.tenants_file).name

    namespace = VARIANTS[variant].get("router", {}).get("discovery", {}).get("namespace")
    assert config.discovery.namespace == (namespace or None)


def test_router_config_override_wins(render: Any) -> None:
    raw = yaml.safe_load(one(render(VARIANTS["custom config"]), "ConfigMap", "-router")["data"]["router.yaml"])
    assert parse_config(raw).routing.max_attempts == 2
    admission = parse_config(raw).admission
    assert admission is not None and admission.queue.max_wait_seconds == 30


def test_queue_saturation_alert_uses_the_routers_queue_bound(render: Any) -> None:
    """SupernodeQueueSaturated compares against admission.queue's bound: the router's default, or the
    value set in router.config (camelCase or snake_case, as the router accepts both)."""
    on = {"monitoring": {"prometheusRule": {"enabled": True, "queueSaturatedRatio": 0.5}}}

    def expr(values: dict[str, Any]) -> str:
        rule = one(render(values), "PrometheusRule")
        return next(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
                    if r["alert"] == "SupernodeQueueSaturated")

    default_bound = parse_config({"discovery": {"type": "kubernetes"}, "admission": {"anonymous": True}}).admission
    assert default_bound is not None
    assert f"> 0.5 * {default_bound.queue.max_queue_length}" in expr(on)
    for key in ("maxQueueLength", "max_queue_length"):
        values = {**on, "router": {"config": {"admission": {"queue": {key: 64}}}}}
        assert "> 0.5 * 64" in expr(values), key
