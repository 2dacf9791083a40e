"""Least privilege, both ways: the chart's RBAC grants every permission the operator's and router's
code needs (derived from their own declarations), and nothing beyond them.

Needs the operator branch (supernode.operator.kube.REQUIRED_PERMISSIONS) and the router branch
(kubernetes discovery)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from helm_chart_support import NAMESPACE, REPO, Objects, find, one

from supernode.api import constants as C
from supernode.operator.kube import REQUIRED_PERMISSIONS as OPERATOR_PERMISSIONS

Perm = tuple[str, str, str]  # (apiGroup, resource, verb)

# What kopf itself does for any operator, whatever our handlers: watch and patch the handled resource
# (finalizer, progress annotations), post Events, scan CRDs for resource discovery. (kube.py declares
# these too; kept here so the chart stays right even if that declaration shrinks.)
KOPF_FRAMEWORK: set[Perm] = {
    (C.GROUP, C.PLURAL, "list"), (C.GROUP, C.PLURAL, "watch"), (C.GROUP, C.PLURAL, "patch"),
    (C.GROUP, f"{C.PLURAL}/status", "patch"),
    ("", "events", "create"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}

# Kubernetes client methods -> the permission each needs. Custom-object calls get their resource from
# the arguments (constants.PLURAL = ModelDeployments). A router call not in this table fails the test.
CLIENT_CALLS: dict[str, tuple[str, str, str] | str] = {
    "list_namespaced_pod": ("", "pods", "list"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),
    "read_namespaced_pod": ("", "pods", "get"),
    "list_namespaced_endpoint_slice": ("discovery.k8s.io", "endpointslices", "list"),
    "list_endpoint_slice_for_all_namespaces": ("discovery.k8s.io", "endpointslices", "list"),
    "list_namespaced_custom_object": "list",
    "list_cluster_custom_object": "list",
    "get_namespaced_custom_object": "get",
}
API_CALL = re.compile(r"^(list|read|get|create|patch|replace|delete|watch|connect)_\w+$")
# Methods of the official client's Configuration used for config loading: no API request.
NOT_API_CALLS = {"load_incluster_config", "load_kube_config", "get_api_key_with_prefix"}
ROUTER_SRC = REPO / "router" / "supernode" / "router"
RBAC_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
HTTP_METHOD_OF_VERB = {"get": "get", "list": "get", "watch": "get", "create": "post", "update": "put",
                       "patch": "patch", "delete": "delete"}


def _official_client_permissions(path: Any, tree: ast.Module) -> set[Perm]:
    """Kubernetes client calls in a module importing `kubernetes` (a streamed call through
    kubernetes.watch adds the `watch` verb for the same resource)."""
    perms: set[Perm] = set()
    # Calls on other imported modules (ssl.create_default_context, ...) are not Kubernetes calls.
    other_modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names if a.name.split(".")[0] != "kubernetes"}
    streamed = {a.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr == "stream" for a in n.args if isinstance(a, ast.Attribute)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        if not API_CALL.match(name) or name in NOT_API_CALLS:
            continue
        if isinstance(node.func.value, ast.Name) and node.func.value.id in other_modules:
            continue
        where = f"{path.relative_to(REPO)}:{node.lineno}"
        assert name in CLIENT_CALLS, f"{where}: Kubernetes call {name}() has no RBAC mapping (chart + this table)"
        target = CLIENT_CALLS[name]
        if isinstance(target, str):
            args = ast.unparse(node)
            assert "PLURAL" in args and "GROUP" in args, f"{where}: custom object call on an unknown resource"
            target = (C.GROUP, C.PLURAL, target)
        perms.add(target)
        if name in streamed:
            perms.add((target[0], target[1], "watch"))
    return perms


def _builds_official_api_object(tree: ast.Module) -> bool:
    """The official client sends requests only through an API object (CoreV1Api, CustomObjectsApi,
    ApiClient, DynamicClient); a module that builds none uses `kubernetes` for config loading only."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name.endswith("Api") or name in {"ApiClient", "DynamicClient"}:
                return True
    return False


def _constant(node: ast.expr, where: str) -> str:
    """A KubeResource argument: a string literal or a supernode.api.constants name (C.X)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "C":
        return str(getattr(C, node.attr))
    raise AssertionError(f"{where}: KubeResource argument {ast.unparse(node)} is not a literal or constant")


def _own_client_verbs(path: Any, tree: ast.Module) -> set[str]:
    """The router's API client view (class KubeClient): each method is named after its RBAC verb and
    calls the same-named verb method of the shared REST client (`self._rest.<verb>`), whose methods
    each issue their verb's HTTP method (checked below)."""
    verbs: set[str] = set()
    for cls in ast.walk(tree):
        if not (isinstance(cls, ast.ClassDef) and cls.name == "KubeClient"):
            continue
        for fn in cls.body:
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and ast.unparse(node.func.value) == "self._rest" and node.func.attr != "close"):
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    assert fn.name in RBAC_VERBS, f"{where}: request issued from {fn.name}(), not a verb-named method"
                    assert node.func.attr == fn.name, f"{where}: {fn.name} calls the REST client's {node.func.attr}"
                    verbs.add(fn.name)
    return verbs


def test_shared_rest_client_methods_issue_their_verbs_http_method() -> None:
    """supernode.kube.client.KubeRest: every verb-named method sends that verb's HTTP method, so a
    caller's verbs (above) are the requests it can make."""
    path = REPO / "kube" / "supernode" / "kube" / "client.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "KubeRest")
    seen = set()
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name not in RBAC_VERBS:
            continue
        methods = {node.args[0].value for node in ast.walk(fn) if isinstance(node, ast.Call)
                   and ast.unparse(node.func) == "self._call" and isinstance(node.args[0], ast.Constant)}
        methods |= {node.func.attr for node in ast.walk(fn) if isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute) and ast.unparse(node.func.value) == "self._http()"}
        assert {m.lower() for m in methods} == {HTTP_METHOD_OF_VERB[fn.name]}, (fn.name, methods)
        seen.add(fn.name)
    assert seen == RBAC_VERBS


def router_permissions() -> set[Perm]:
    """Derived from the router's source: official-client calls, plus every KubeResource the discovery
    declares, times every verb the router's own KubeClient can issue (its informers list and watch each)."""
    perms: set[Perm] = set()
    resources: set[tuple[str, str]] = set()
    verbs: set[str] = set()
    for path in sorted(ROUTER_SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        imports_k8s = any(
            (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "kubernetes")
            or (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "kubernetes" for a in n.names))
            for n in ast.walk(tree))
        if imports_k8s and _builds_official_api_object(tree):
            perms |= _official_client_permissions(path, tree)
        verbs |= _own_client_verbs(path, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "KubeResource":
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                args = dict(zip(("group", "version", "plural"), node.args, strict=False))
                args |= {k.arg: k.value for k in node.keywords if k.arg in ("group", "plural")}
                resources.add((_constant(args["group"], where), _constant(args["plural"], where)))
    assert not resources or verbs, "KubeResources declared but no KubeClient request method found"
    return perms | {(group, plural, verb) for group, plural in resources for verb in verbs}


ROUTER_PERMISSIONS = router_permissions()
NEVER: set[str] = {"*", "escalate", "bind", "impersonate", "secrets", "deletecollection"}
SECRETS_WRITE_ONLY = {"create", "delete"}  # per-group Secrets (operator/group_secrets.py): no get/list/watch


def _field(rule: Any, *names: str) -> Any:
    for name in names:
        if isinstance(rule, Mapping) and name in rule:
            return rule[name]
        if hasattr(rule, name):
            return getattr(rule, name)
    raise KeyError(f"rule {rule!r} has none of {names}")


def expand(rules: Any) -> set[Perm]:
    """(group, resource, verb) triples from RBAC-shaped rules: a list of rules, or a mapping of client
    method -> rules; a rule is a PolicyRule-like mapping/object or a (group, resource, verbs) tuple."""
    if isinstance(rules, Mapping) and not {"verbs", "resources"} & set(rules):
        return set().union(*(expand(v) for v in rules.values())) if rules else set()
    if isinstance(rules, Mapping) or not isinstance(rules, Iterable) or isinstance(rules, str):
        rules = [rules]
    out: set[Perm] = set()
    for rule in rules:
        if isinstance(rule, tuple) and len(rule) == 3 and all(isinstance(x, str | tuple | list) for x in rule):
            groups, resources, verbs = ([x] if isinstance(x, str) else list(x) for x in rule)
        else:
            groups = _field(rule, "apiGroups", "api_groups", "api_group", "groups", "group")
            resources = _field(rule, "resources", "resource")
            verbs = _field(rule, "verbs", "verb")
            groups, resources, verbs = ([x] if isinstance(x, str) else list(x) for x in (groups, resources, verbs))
        out |= {(g, r, v) for g in groups for r in resources for v in verbs}
    return out


def granted_to(objects: Objects, service_account_suffix: str) -> dict[str, set[Perm]]:
    """Permissions bound to the chart's ServiceAccount, by scope ('' = cluster-wide, else namespace)."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in {"Role", "ClusterRole"}}
    scopes: dict[str, set[Perm]] = {}
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        subjects = binding["subjects"]
        if not any(s["name"].endswith(service_account_suffix) and s["namespace"] == NAMESPACE for s in subjects):
            continue
        ns = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], "" if ref["kind"] == "ClusterRole" else ns, ref["name"])]
        scopes.setdefault(ns, set()).update(expand(role["rules"]))
    return scopes


def operator_needs() -> set[Perm]:
    """Everything but the leader-election Lease (granted by a Role in the release namespace only)."""
    return (expand(OPERATOR_PERMISSIONS) | KOPF_FRAMEWORK) - lease_needs()


def lease_needs() -> set[Perm]:
    return {p for p in expand(OPERATOR_PERMISSIONS) if p[:2] == ("coordination.k8s.io", "leases")}


def test_leader_election_permissions_are_declared() -> None:
    assert {v for _, _, v in lease_needs()} == {"get", "create", "update"}


def test_router_permissions_are_derived_from_its_discovery_code() -> None:
    assert {(g, r, v) for g, r in (("", "pods"), (C.GROUP, C.PLURAL)) for v in ("list", "watch")} <= ROUTER_PERMISSIONS
    assert all(p[1] in {"pods", C.PLURAL, "endpointslices"} for p in ROUTER_PERMISSIONS), ROUTER_PERMISSIONS


def test_required_permissions_are_declared() -> None:
    perms = expand(OPERATOR_PERMISSIONS)
    assert perms, "supernode.operator.kube.REQUIRED_PERMISSIONS is empty"
    assert (C.GROUP, C.PLURAL, "watch") in perms | KOPF_FRAMEWORK


def test_operator_may_set_block_owner_deletion_on_its_children(render: Any) -> None:
    """Children's ownerReferences carry blockOwnerDeletion: true; with OwnerReferencesPermissionEnforcement
    the API server refuses them unless the creator may update the owner's finalizers subresource."""
    finalizers = (C.GROUP, f"{C.PLURAL}/finalizers", "update")
    assert finalizers in expand(OPERATOR_PERMISSIONS)
    assert finalizers in granted_to(render({}), "-operator")[""]
    for ns in ("llm", "batch"):
        assert finalizers in granted_to(render({"operator": {"watchNamespaces": ["llm", "batch"]}}), "-operator")[ns]


def test_operator_cluster_wide_rbac_is_exactly_what_it_needs(render: Any) -> None:
    scopes = granted_to(render({}), "-operator")
    assert set(scopes) == {"", NAMESPACE}, f"a ClusterRole plus the leader-election Role, got {set(scopes)}"
    assert scopes[NAMESPACE] == lease_needs(), "the Lease Role grants exactly the Lease calls"
    need = operator_needs()
    assert not need - scopes[""], f"missing RBAC for operator calls: {sorted(need - scopes[''])}"
    assert not scopes[""] - need, f"RBAC grants more than the operator uses: {sorted(scopes[''] - need)}"


def device_info_needs() -> set[Perm]:
    """What the device-info watch (kube.KubeClient.list_configmaps / watch_configmaps) calls."""
    from supernode.operator.kube import KubeClient
    return expand([r for m in (KubeClient.list_configmaps, KubeClient.watch_configmaps) for r in m.__rbac__])


def test_operator_namespaced_rbac_keeps_cluster_scoped_reads_only(render: Any) -> None:
    scopes = granted_to(render({"operator": {"watchNamespaces": ["llm", "batch"]}}), "-operator")
    assert set(scopes) == {"", "llm", "batch", NAMESPACE, C.ASCEND_DEVICE_INFO_NAMESPACE}
    # The release namespace: the Lease, and finding the router replicas to ask (autoscaler, drain watch).
    assert scopes[NAMESPACE] == lease_needs() | {("", "services", "list"), ("", "pods", "list")}
    # kube-system: only reading ConfigMaps there, for the device plugin's reports.
    assert scopes[C.ASCEND_DEVICE_INFO_NAMESPACE] == device_info_needs() == {
        ("", "configmaps", "list"), ("", "configmaps", "watch")}
    need = operator_needs()
    cluster_scoped = {p for p in need if p[1].split("/")[0] in {"nodes", "namespaces", "customresourcedefinitions"}}
    assert scopes[""] == cluster_scoped, f"ClusterRole must hold only cluster-scoped reads: {sorted(scopes[''])}"
    for ns in ("llm", "batch"):
        assert scopes[ns] == need - cluster_scoped, ns


def test_operator_reads_the_routers_in_the_release_namespace_only_when_it_asks_them(render: Any) -> None:
    """A namespaced operator lists the router Service and pods in the release namespace (router_poll.py)
    when the autoscaler or the drain watch asks the routers, and only then."""
    assert {("", "services", "list"), ("", "pods", "list")} <= expand(OPERATOR_PERMISSIONS)
    quiet = {"watchNamespaces": ["llm"], "autoscaler": {"enabled": False}, "drainPollSeconds": 0}
    assert granted_to(render({"operator": quiet}), "-operator")[NAMESPACE] == lease_needs()
    watched_here = {"watchNamespaces": ["llm", NAMESPACE]}
    assert not find(render({"operator": watched_here}), "Role", "-operator-routers"), "its Role there covers it"


def test_operator_device_info_namespace_follows_the_value(render: Any) -> None:
    """The watched namespace is what the operator is told (`--device-info-namespace`) and what the Role
    grants; empty turns both off."""
    for value, role_ns in (("npu-system", "npu-system"), ("", None)):
        objects = render({"operator": {"watchNamespaces": ["llm"], "deviceInfoNamespace": value}})
        args = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--device-info-namespace={value}" in args
        scopes = granted_to(objects, "-operator")
        assert set(scopes) == {"", "llm", NAMESPACE} | ({role_ns} if role_ns else set())
        if role_ns:
            assert scopes[role_ns] == device_info_needs()
    # Cluster-wide: the ClusterRole already reads ConfigMaps everywhere; no extra Role.
    assert not find(render({}), "Role", "-device-info")


def test_operator_without_leader_election_gets_no_lease_rights(render: Any) -> None:
    scopes = granted_to(render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}}), "-operator")
    assert set(scopes) == {""} and not scopes[""] & lease_needs()


@pytest.mark.parametrize("namespace", ["", "llm"])
def test_router_rbac_is_read_only_discovery(render: Any, namespace: str) -> None:
    scopes = granted_to(render({"router": {"discovery": {"namespace": namespace}}}), "-router")
    assert set(scopes) == {namespace}, "router: one ClusterRole (all namespaces) or one Role (its namespace)"
    assert scopes[namespace] == ROUTER_PERMISSIONS


def test_nothing_dangerous_is_ever_granted(render: Any) -> None:
    for values in ({}, {"operator": {"watchNamespaces": ["llm"]}, "monitoring": {"kubeStateMetrics": {
            "serviceAccount": {"name": "ksm"}}}}):
        for obj in render(values):
            if obj["kind"] in {"Role", "ClusterRole"}:
                for group, resource, verb in expand(obj["rules"]):
                    if (group, resource) == ("", "secrets") and verb in SECRETS_WRITE_ONLY:
                        continue  # the operator writes group Secrets but can never read any Secret
                    assert not {group, resource, verb} & NEVER, f"{obj['metadata']['name']}: {resource} {verb}"
