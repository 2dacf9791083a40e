"""Validate objects the way the API server would with the generated CRD, without an API server.

Defaults are applied as the server does (missing field with a `default` gets it, then its own
children are defaulted), the openAPIV3Schema is checked with jsonschema (unknown fields refused,
as `kubectl apply` with strict field validation does), and every `x-kubernetes-validations` CEL
rule found in the schema is evaluated with cel-python on the defaulted object.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import celpy
import jsonschema

from supernode.api.crdgen import crd_manifest


@cache
def crd_schema() -> dict[str, Any]:
    return crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    obj = copy.deepcopy(obj)
    _default(schema, obj)
    return obj


def _default(schema: dict[str, Any], obj: Any) -> None:
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _default(sub, obj[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for value in obj.values():
                _default(extra, value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _default(schema["items"], item)


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


@cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_strict(crd_schema()))


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def schema_errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for each openAPIV3Schema violation of the defaulted object."""
    defaulted = apply_defaults(crd_schema(), obj)
    errors = sorted(_validator().iter_errors(defaulted), key=lambda e: list(map(str, e.absolute_path)))
    out = []
    for err in errors:
        path = _path(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            path = ".".join(p for p in (path, extra[0] if extra else "") if p)
        elif err.validator == "required":
            missing = err.message.split("'")[1]
            path = ".".join(p for p in (path, missing) if p)
        out.append((path, err.message))
    return out


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_results(schema: dict[str, Any], obj: Any, path: str = "") -> list[tuple[str, str, bool]]:
    """(path + fieldPath, message, passed) for every CEL rule in `schema` that applies to `obj`."""
    out = []
    for rule in schema.get("x-kubernetes-validations") or []:
        passed = bool(_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(obj)}))
        out.append((path + rule.get("fieldPath", ""), rule["message"], passed))
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                out += cel_results(sub, obj[key], f"{path}.{key}" if path else key)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += cel_results(schema["items"], item, f"{path}[{i}]")
    return out


def cel_errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for each failing CEL rule on the defaulted object."""
    defaulted = apply_defaults(crd_schema(), obj)
    return [(p, m) for p, m, ok in cel_results(crd_schema(), defaulted) if not ok]


def server_errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """What the API server would answer: schema errors, else CEL errors (it runs CEL only on valid shapes)."""
    return schema_errors(obj) or cel_errors(obj)
