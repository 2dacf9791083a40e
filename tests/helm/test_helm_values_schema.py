"""values.schema.json and the chart's own checks refuse bad values with a message naming the key."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
import yaml
from helm_chart_support import CHART, EXAMPLES, find, load_values, one, parse_manifests, with_auth_choice

# (case, values, text the error must contain). Schema errors name the JSON pointer of the bad key.
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"opertor": {}}, "opertor"),
    ("unknown operator key (typo)", {"operator": {"replica": 2}}, "replica"),
    ("unknown router key", {"router": {"prot": 8080}}, "prot"),
    ("replicas is not a number", {"operator": {"replicas": "two"}}, "/operator/replicas"),
    ("two operators without leader election", {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}},
     "/operator/replicas"),
    ("too many operators", {"operator": {"replicas": 9}}, "/operator/replicas"),
    ("lease duration not positive", {"operator": {"leaderElection": {"leaseDuration": 0}}},
     "/operator/leaderElection/leaseDuration"),
    ("resync not positive", {"operator": {"resyncSeconds": 0}}, "/operator/resyncSeconds"),
    ("prometheus url without scheme", {"operator": {"autoscaler": {"prometheus": {"url": "prometheus:9090"}}}},
     "/operator/autoscaler/prometheus/url"),
    ("root user", {"podSecurity": {"runAsUser": 0}}, "/podSecurity/runAsUser"),
    ("privileged router port", {"router": {"port": 80}}, "/router/port"),
    ("bad service type", {"router": {"service": {"type": "Ingress"}}}, "/router/service/type"),
    ("missing memory limit", {"router": {"resources": {"limits": {"memory": None}}}}, "/router/resources/limits"),
    ("bad cpu quantity", {"operator": {"resources": {"requests": {"cpu": "lots"}}}},
     "/operator/resources/requests/cpu"),
    ("bad pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("bad digest", {"image": {"digest": "md5:abc"}}, "/image/digest"),
    ("unpinned image tag", {"image": {"tag": "v1 beta"}}, "/image/tag"),
    ("namespace not a DNS label", {"operator": {"watchNamespaces": ["LLM_Prod"]}}, "/operator/watchNamespaces/0"),
    ("log level", {"router": {"logLevel": "verbose"}}, "/router/logLevel"),
    ("ledger path relative", {"router": {"ledger": {"path": "usage.sqlite"}}}, "/router/ledger/path"),
    ("error ratio above 1", {"monitoring": {"prometheusRule": {"errorRateRatio": 5}}}, "errorRateRatio"),
    ("scrape interval unit", {"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
    ("network peer typo", {"networkPolicy": {"routerIngressFrom": [{"podSelectr": {}}]}}, "podSelectr"),
    ("env without name", {"router": {"extraEnv": [{"value": "x"}]}}, "/router/extraEnv/0"),
    ("privileged metrics port", {"operator": {"metrics": {"enabled": True, "port": 90}}}, "/operator/metrics/port"),
    ("metrics key typo", {"operator": {"metrics": {"enabled": True, "port": 9090, "path": "/m"}}}, "path"),
    ("two routers on local state", {"router": {"replicas": 2}}, "/router/state/type"),
    ("router HPA on local state", {"router": {"autoscaling": {"enabled": True}}}, "/router/state/type"),
    ("router HPA on a sqlite ledger", {"router": {"autoscaling": {"enabled": True}, "state": {"type": "redis"}}},
     "/router/ledger/type"),
    ("unknown state backend", {"router": {"state": {"type": "etcd"}}}, "/router/state/type"),
    ("redis URL scheme", {"router": {"state": {"type": "redis", "redis": {"url": "http://cache:6379"}}}},
     "/router/state/redis/url"),
    ("postgres DSN scheme", {"router": {"ledger": {"type": "postgres", "postgres": {"dsn": "mysql://db/x"}}}},
     "/router/ledger/postgres/dsn"),
]

# Router state shared by several replicas (router.state / router.ledger).
SHARED: dict[str, Any] = {"state": {"type": "redis", "redis": {"url": "redis://cache:6379/0"}},
                          "ledger": {"type": "postgres", "postgres": {"dsn": "postgresql://app@db:5432/usage"}}}

# Checks the schema cannot express clearly; the templates `fail` with a message instead.
BAD_RENDERS: list[tuple[str, dict[str, Any], str]] = [
    ("renew deadline above lease duration", {"operator": {"leaderElection": {"renewDeadline": 30}}},
     "need retryPeriod < renewDeadline < leaseDuration"),
    ("latest control-plane tag", {"image": {"tag": "latest"}}, 'image.tag must pin a version'),
    ("HPA min above max", {"router": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
                                      **SHARED}},
     "router.autoscaling.minReplicas (5) must not exceed maxReplicas (2)"),
    ("PDB that blocks drains", {"router": {"pdb": {"enabled": True}}},
     "router.pdb.minAvailable (1) must be below the router's replicas (1)"),
    ("redis without a URL", {"router": {"state": {"type": "redis"}}},
     "router.state.type=redis needs router.state.redis.url or router.state.redis.existingSecret"),
    ("password in the redis URL", {"router": {"state": {"type": "redis", "redis": {"url": "redis://:pw1@c:6379"}}}},
     "router.state.redis.url must not contain a password"),
    ("password in the postgres DSN",
     {"router": {"ledger": {"type": "postgres", "postgres": {"dsn": "postgresql://u:pw1@db/x"}}}},
     "router.ledger.postgres.dsn must not contain a password"),
    ("ledger PVC with postgres",
     {"router": {"ledger": {"type": "postgres", "postgres": {"dsn": "postgresql://u@db/x"},
                            "persistence": {"enabled": True}}}},
     "router.ledger.persistence is for the sqlite ledger only"),
    ("metrics port on the health port", {"operator": {"metrics": {"port": 8080}}},
     "operator.metrics.port must differ from operator.healthPort"),
    ("existing SA without name", {"router": {"serviceAccount": {"create": False}}},
     "router.serviceAccount.name is required"),
]


def test_defaults_and_examples_pass_the_schema(chart: Any) -> None:
    chart.validate_schema(chart.values)
    for path in EXAMPLES:
        chart.validate_schema(load_values(path))


@pytest.mark.parametrize(("case", "values", "expected"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_schema_rejects_bad_values(chart: Any, case: str, values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert expected in str(err.value), f"{case}: message does not name {expected!r}: {err.value}"


def test_render_refuses_values_that_fail_the_schema(chart: Any) -> None:
    """The same check happens at install time (render validates), not only when asked."""
    with pytest.raises(helm.HelmValuesError, match="/podSecurity/runAsUser"):
        chart.render({"podSecurity": {"runAsUser": 0}}, name="sn", namespace="x")


@pytest.mark.parametrize(("case", "values", "expected"), BAD_RENDERS, ids=[c[0] for c in BAD_RENDERS])
def test_templates_fail_with_a_clear_message(chart: Any, case: str, values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        chart.render(with_auth_choice(values), name="sn", namespace="x")
    assert expected in str(err.value), f"{case}: {err.value}"
    assert "pw1" not in str(err.value), "a password was echoed"


@pytest.mark.parametrize("router", [{}, {"tenants": {"existingSecret": ""}}])
def test_a_router_without_tenants_renders_only_when_anonymous_is_explicit(chart: Any, router: dict[str, Any]) -> None:
    """Issue 10: authentication is off only when a setting says so; the chart refuses otherwise."""
    with pytest.raises(helm.HelmError, match=r"router\.tenants\.anonymous=true"):
        chart.render({"router": router}, name="sn", namespace="x")
    objects = parse_manifests(chart.render({"router": {"tenants": {"anonymous": True}}}, name="sn", namespace="x"))
    config = yaml.safe_load(one(objects, "ConfigMap", "-router")["data"]["router.yaml"])
    assert config["admission"] == {"anonymous": True}


def test_the_kind_e2e_values_render(chart: Any) -> None:
    """e2e/cluster/values-kind.yaml must say how the router authenticates (it says anonymous)."""
    values = load_values(CHART.parents[1] / "e2e" / "cluster" / "values-kind.yaml")
    chart.validate_schema(values)
    assert find(parse_manifests(chart.render(values, name="sn", namespace="x")), "Deployment", "-router")
