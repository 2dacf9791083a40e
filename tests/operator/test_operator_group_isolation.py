"""Group isolation: per-group Secret (store secret + engine token, read by the engine pods as env) and
per-group NetworkPolicy (only the group's own pods may connect besides the router)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
from builders import make_plan, operator_md
from fake_cluster import MD_KIND, FakeCluster, node
from k8s_emulator import K8sEmulator, Kind
from operator_harness import eventually, running_operator

from supernode.api import constants as C
from supernode.operator import builders, naming
from supernode.operator.group_secrets import KEY_ENGINE_TOKEN, KEY_GROUP_SECRET, GroupKeys

KEYS = GroupKeys(b"operator-group-key-0123456789abcdef", "engine-token-0123456789abcdef")
ROTATED = GroupKeys(KEYS.group_key, "rotated-engine-token-0123456789")
MDS = f"/apis/{C.GROUP}/{C.VERSION}/namespaces/llm/{C.PLURAL}"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _env(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"].get("template") or obj["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    return {e["name"]: e for e in spec["spec"]["containers"][0]["env"]}


def test_each_group_gets_its_own_deterministic_secret_and_pods_only_reference_it() -> None:
    md = operator_md().uid().engine("builtin").accelerator("cpu").parallelism(tensor=2).replicas(2).obj()
    plan = make_plan(md, [["cpu-a", "cpu-b"], ["cpu-c", "cpu-d"]], [None, None], None)
    rev = naming.revision(md)
    objs = builders.desired_objects(md, plan, rev, lws=False, keys=KEYS)
    assert objs == builders.desired_objects(md, plan, rev, lws=False, keys=KEYS)  # no churn between reconciles
    secrets = [o for o in objs if o["kind"] == "Secret"]
    workloads = [o for o in objs if o["kind"] == "StatefulSet"]
    assert [s["metadata"]["name"] for s in secrets] == [KEYS.secret_name(w["metadata"]["name"]) for w in workloads]
    values = [_decoded(s) for s in secrets]
    assert values[0][KEY_GROUP_SECRET] != values[1][KEY_GROUP_SECRET]
    assert {v[KEY_ENGINE_TOKEN] for v in values} == {KEYS.engine_token}
    assert all(s["metadata"]["ownerReferences"][0]["uid"] == md.metadata.uid for s in secrets)
    for w, s in zip(workloads, secrets, strict=True):
        env = _env(w)
        assert env[C.ENV_GROUP_SECRET]["valueFrom"]["secretKeyRef"] == {
            "name": s["metadata"]["name"], "key": KEY_GROUP_SECRET}
        assert env[C.ENV_ENGINE_TOKEN]["valueFrom"]["secretKeyRef"]["key"] == KEY_ENGINE_TOKEN
        assert env[C.ENV_GROUP_BIND_ADDR]["value"] == "$(POD_IP)"
    blob = json.dumps([o for o in objs if o["kind"] != "Secret"])
    assert KEYS.engine_token not in blob and all(v[KEY_GROUP_SECRET] not in blob for v in values)
    without = builders.desired_objects(md, plan, rev, lws=False)
    assert not [o for o in without if o["kind"] == "Secret"] and C.ENV_GROUP_SECRET not in json.dumps(without)


def test_vllm_groups_get_the_engine_token_as_their_api_key() -> None:
    md = operator_md().uid().engine("vllm").accelerator("nvidia-b200", 8).parallelism(data=8, expert=8).obj()
    plan = make_plan(md, [["b200-0"]], [None], C.RESOURCE_NVIDIA)
    objs = builders.desired_objects(md, plan, naming.revision(md), lws=False, keys=KEYS)
    (sts,) = [o for o in objs if o["kind"] == "StatefulSet"]
    assert _env(sts)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == KEY_ENGINE_TOKEN
    assert C.ENV_GROUP_SECRET not in _env(sts)
    only_key = GroupKeys(group_key=b"k" * 32)  # no engine token configured: no token env at all
    objs = builders.desired_objects(md, plan, naming.revision(md), lws=False, keys=only_key)
    (sts,) = [o for o in objs if o["kind"] == "StatefulSet"]
    assert "VLLM_API_KEY" not in _env(sts)


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_a_group_policy_admits_exactly_its_own_pods() -> None:
    md = operator_md().uid().engine("builtin").accelerator("cpu").parallelism(tensor=2).replicas(2).obj()
    plan = make_plan(md, [["cpu-a", "cpu-b"], ["cpu-c", "cpu-d"]], [None, None], None)
    objs = builders.desired_objects(md, plan, naming.revision(md), lws=False, policy=True)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    pod_labels = [o["spec"]["template"]["metadata"]["labels"] for o in objs if o["kind"] == "StatefulSet"]
    assert len(policies) == 2 == len(pod_labels)
    for i, policy in enumerate(policies):
        spec = policy["spec"]
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        assert "ports" not in rule and spec["policyTypes"] == ["Ingress"]
        for j, labels in enumerate(pod_labels):  # applies to, and admits, group i's pods only
            assert _labels_match(spec["podSelector"]["matchLabels"], labels) == (i == j)
            assert _labels_match(peer["podSelector"]["matchLabels"], labels) == (i == j)
    assert not [o for o in builders.desired_objects(md, plan, naming.revision(md), lws=False)
                if o["kind"] == "NetworkPolicy"]


def test_keys_come_from_the_operator_env() -> None:
    assert GroupKeys.from_env({}) is None
    keys = GroupKeys.from_env({C.ENV_GROUP_KEY: "k" * 32, C.ENV_ENGINE_TOKEN: "t" * 32})
    assert keys is not None and keys.group_key == b"k" * 32 and "k" * 32 not in repr(keys)


async def test_live_operator_creates_and_removes_group_secrets(k8s: tuple[K8sEmulator, str]) -> None:
    emu, url = k8s
    emu.declare(MD_KIND, shortnames=["md"])
    emu.declare(Kind("", "v1", "secrets", "Secret", status=False))
    emu.declare(Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", status=False))
    cluster = FakeCluster(emu)
    for sp in range(2):
        await cluster.add_nodes(*(node(f"sp{sp}-n{i}", f"sp-{sp}") for i in range(2)))
    md = (operator_md("v4").engine("vllm").accelerator("ascend-910c", 16)
          .parallelism(tensor=16, data=2, expert=32).placement(supernode="Required").replicas(2).dict())

    def secrets() -> list[dict[str, Any]]:
        return emu.objects_of("secrets", "", "llm", f"{C.LABEL_DEPLOYMENT}=v4")

    def ready() -> bool:
        return bool((emu.get(C.PLURAL, "llm", "v4", C.GROUP) or {}).get("status", {}).get("readyReplicas") == 2)

    async with cluster.running():
        async with running_operator(url), httpx.AsyncClient(base_url=url) as c:  # an operator without keys
            assert (await c.post(MDS, json=md)).status_code == 201
            await eventually(ready, what="ready without keys")
            assert secrets() == []
        async with running_operator(url, resync=0.1, keys=KEYS, network_policies=True), \
                httpx.AsyncClient(base_url=url) as c:
            await _upgraded_operator_adds_secrets_and_policies(emu, c, secrets, ready)
        async with running_operator(url, resync=0.1, keys=ROTATED, network_policies=True):  # a new token

            def rotated() -> bool:  # exactly one Secret left: the old one is deleted, not kept beside
                found = secrets()
                return len(found) == 1 and found[0]["metadata"]["name"].endswith(ROTATED.fingerprint()) \
                    and _decoded(found[0])[KEY_ENGINE_TOKEN] == ROTATED.engine_token

            await eventually(rotated, what="the group's Secret replaced by one with the new token")
            (sts,) = emu.objects_of("statefulsets", "apps", "llm", f"{C.LABEL_DEPLOYMENT}=v4")
            assert ROTATED.secret_name(sts["metadata"]["name"]) in json.dumps(sts["spec"]["template"])


async def _upgraded_operator_adds_secrets_and_policies(emu: K8sEmulator, c: httpx.AsyncClient, secrets: Any,
                                                      ready: Any) -> None:
    def policies() -> list[dict[str, Any]]:
        return emu.objects_of("networkpolicies", "networking.k8s.io", "llm", f"{C.LABEL_DEPLOYMENT}=v4")

    await eventually(lambda: len(secrets()) == 2, what="a Secret per group, added to the running groups")
    await eventually(lambda: len(policies()) == 2, what="a NetworkPolicy per group")
    for sts in emu.objects_of("statefulsets", "apps", "llm", f"{C.LABEL_DEPLOYMENT}=v4"):
        assert "VLLM_API_KEY" in json.dumps(sts["spec"]["template"])
    await eventually(ready, what="ready")
    await asyncio.sleep(0.5)
    since = emu.request_count
    await asyncio.sleep(0.6)
    assert emu.writes(since) == [], "a settled deployment rewrites its Secrets"
    await c.patch(f"{MDS}/v4/scale", json={"spec": {"replicas": 1}}, headers=MERGE)
    await eventually(lambda: len(secrets()) == 1, what="the removed group's Secret deleted")
    await eventually(lambda: len(policies()) == 1, what="the removed group's NetworkPolicy deleted")
    assert secrets()[0]["metadata"]["labels"][C.LABEL_GROUP] == "0"
    assert policies()[0]["metadata"]["labels"][C.LABEL_GROUP] == "0"
