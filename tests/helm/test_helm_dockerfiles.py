"""The images are reviewable and pinned: no container engine exists here, so parse the Dockerfiles and
hold them to the rules (pinned bases, non-root, pinned torch, no torch in the control plane)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helm_chart_support import CHART, REPO

DOCKER = REPO / "docker"
IMAGES = ("control-plane", "engine-cpu", "engine-cuda", "engine-ascend")


@dataclass
class Dockerfile:
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults declared before the first FROM
    stages: list[list[tuple[str, str]]] = field(default_factory=list)  # per stage: (instruction, rest)

    @property
    def final(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def instructions(self, name: str) -> list[str]:
        return [rest for stage in self.stages for inst, rest in stage if inst == name]


def parse(path: Path) -> Dockerfile:
    """Instructions with line continuations joined and comments dropped; ARGs resolved in FROM."""
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    assert not buffer, f"{path.name}: dangling line continuation"
    df = Dockerfile()
    for line in logical:
        inst, _, rest = line.partition(" ")
        inst = inst.upper()
        if inst == "ARG" and not df.stages:
            name, _, default = rest.partition("=")
            df.args[name.strip()] = default.strip()
        elif inst == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: df.args[m.group(1) or m.group(2)], rest)
            df.stages.append([("FROM", image)])
        else:
            assert df.stages, f"{path.name}: {inst} before FROM"
            df.stages[-1].append((inst, rest))
    return df


def image_of(from_rest: str) -> str:
    return from_rest.split()[0]


def pinned(ref: str) -> bool:
    if "@sha256:" in ref:
        return True
    name, _, tag = ref.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(ch.isdigit() for ch in tag)


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    return {name: parse(DOCKER / f"{name}.Dockerfile") for name in IMAGES}


def torch_pin() -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [d for d in extras["engine"] if d.startswith("torch")]
    return pin


def test_bases_are_pinned_and_never_latest(dockerfiles: dict[str, Dockerfile]) -> None:
    for name, df in dockerfiles.items():
        stage_names = set()
        for stage in df.stages:
            ref = image_of(stage[0][1])
            if ref in stage_names:
                continue  # FROM an earlier stage
            assert pinned(ref), f"{name}: base image {ref!r} is not pinned by a version tag or digest"
            parts = stage[0][1].split()
            if len(parts) == 3 and parts[1].upper() == "AS":
                stage_names.add(parts[2])
        assert "latest" not in " ".join(image_of(s[0][1]) for s in df.stages), name


def test_final_stage_runs_as_a_non_root_user(dockerfiles: dict[str, Dockerfile]) -> None:
    for name, df in dockerfiles.items():
        users = [rest for inst, rest in df.final if inst == "USER"]
        assert users, f"{name}: the final stage sets no USER (it would run as root)"
        user = users[-1].split(":")[0]
        # Numeric, so the kubelet can verify runAsNonRoot without /etc/passwd.
        assert user.isdigit() and int(user) >= 1000, f"{name}: USER {users[-1]} must be a numeric non-root uid"
        assert df.final[-1][0] in {"CMD", "ENTRYPOINT"} or any(i == "ENTRYPOINT" for i, _ in df.final), name


def test_uid_matches_the_chart_security_context(dockerfiles: dict[str, Dockerfile]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = [r for i, r in dockerfiles["control-plane"].final if i == "USER"][-1].split(":")[0]
    assert int(uid) == values["podSecurity"]["runAsUser"]


def test_torch_is_pinned_like_the_engine_extra_and_absent_from_the_control_plane(
    dockerfiles: dict[str, Dockerfile],
) -> None:
    pin = torch_pin()  # torch==2.13.0
    version = pin.split("==")[1]
    for name, df in dockerfiles.items():
        runs = " ".join(df.instructions("RUN"))
        torches = re.findall(r"(?<![\w-])torch(?![\w-])\S*", runs)
        if name == "control-plane":
            assert "[engine]" not in runs and not [t for t in torches if "==" in t], runs
            assert '! /opt/supernode/bin/python -c "import torch"' in runs, "control plane must prove torch is absent"
            continue
        assert torches and all(t == pin for t in torches), f"{name}: torch must be installed as {pin}, got {torches}"
        assert "'.[engine]'" in runs, f"{name}: installs the engine extra"
        npu = re.findall(r"torch-npu\S*", runs)
        if name == "engine-ascend":
            assert npu == [f"torch-npu=={version}"], f"torch-npu must match torch exactly: {npu}"
        else:
            assert not npu, f"{name} must not install torch-npu"


def test_every_pip_and_apt_install_is_pinned(dockerfiles: dict[str, Dockerfile]) -> None:
    for name, df in dockerfiles.items():
        for run in df.instructions("RUN"):
            for cmd in re.split(r"&&|;", run):
                words = cmd.split()
                if "pip" in " ".join(words[:2]) or (words and words[0].endswith("/pip")):
                    pkgs = [w.strip("'\"") for w in words[2:] if not w.startswith("-") and not w.startswith("http")]
                    for pkg in pkgs:
                        assert pkg.startswith(".") or "==" in pkg, f"{name}: unpinned pip package {pkg!r}"
                if words[:2] == ["apt-get", "install"]:
                    for pkg in [w for w in words[2:] if not w.startswith("-")]:
                        assert "=" in pkg, f"{name}: unpinned apt package {pkg!r}"


def test_copied_sources_exist_and_are_not_dockerignored(dockerfiles: dict[str, Dockerfile]) -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for name, df in dockerfiles.items():
        for copy in df.instructions("COPY"):
            if copy.startswith("--from"):
                continue
            *sources, _dest = copy.split()
            for src in sources:
                src = src.rstrip("/")
                assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
                assert src not in ignored, f"{name}: COPY {src} is excluded by .dockerignore"


def test_chart_references_the_control_plane_image(dockerfiles: dict[str, Dockerfile]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    labels = " ".join(dockerfiles["control-plane"].instructions("LABEL"))
    title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', labels)
    assert title and values["image"]["repository"].endswith("/" + title.group(1))


def built_tag(name: str) -> str:
    """The `docker build -t IMAGE` each Dockerfile documents in its header."""
    text = (DOCKER / f"{name}.Dockerfile").read_text()
    match = re.search(rf"docker build -f docker/{re.escape(name)}\.Dockerfile\s+-t\s+(\S+)", text)
    assert match, f"{name}.Dockerfile: header must show its `docker build -f ... -t IMAGE` command"
    return match.group(1)


def test_operator_default_engine_images_are_the_ones_the_dockerfiles_build() -> None:
    from supernode.operator.engines import BUILTIN_ENGINE_IMAGES, DEFAULT_IMAGES, IMAGE_REGISTRY, IMAGE_TAG

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert IMAGE_TAG == chart["appVersion"] == version, "engine image tag = chart appVersion = package version"
    values = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    org = values["repository"].rsplit("/", 1)[0]
    assert f"{values['registry']}/{org}" == IMAGE_REGISTRY, "engine images live next to the control-plane image"
    assert built_tag("control-plane") == f"{values['registry']}/{values['repository']}:{IMAGE_TAG}"
    for vendor, name in BUILTIN_ENGINE_IMAGES.items():
        dockerfile = name.removeprefix("supernode-")
        assert built_tag(dockerfile) == DEFAULT_IMAGES[("builtin", vendor)] == f"{IMAGE_REGISTRY}/{name}:{IMAGE_TAG}"
    assert {f"engine-{v}" for v in ("cpu", "cuda", "ascend")} == {
        n.removeprefix("supernode-") for n in BUILTIN_ENGINE_IMAGES.values()}, "every engine Dockerfile is a default"
