"""Every pod template the chart renders is restricted-PSS clean and has requests and limits."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart_support import EXAMPLES, load_values, pod_templates

VARIANTS = {"default": {}, **{p.stem: load_values(p) for p in EXAMPLES},
            "namespaced": {"operator": {"watchNamespaces": ["llm"]}, "router": {"discovery": {"namespace": "llm"}}}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pod_security_on_every_pod_template(render: Any, variant: str) -> None:
    templates = pod_templates(render(VARIANTS[variant]))
    assert len(templates) == 2, f"expected operator and router, got {[n for n, _ in templates]}"
    for name, pod in templates:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, f"{name}: hostPath volume {volume['name']}"
        for c in pod["containers"] + pod.get("initContainers", []):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            res = c["resources"]
            assert res["requests"].keys() >= {"cpu", "memory"} and res["limits"].keys() >= {"memory"}, where
            assert not c["image"].endswith(":latest") and (":" in c["image"].rsplit("/", 1)[-1] or "@" in c["image"])
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: read-only root needs a writable /tmp"
            for port in c.get("ports", []):
                assert port["containerPort"] >= 1024, f"{where}: non-root cannot bind {port['containerPort']}"
            probes = {"livenessProbe", "readinessProbe"}
            assert probes <= c.keys(), f"{where}: missing probes"
