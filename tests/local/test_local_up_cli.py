"""`supernode up` refusals (before any process starts) and the shipped examples' validity."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from supernode.api.models import Mode
from supernode.cli.local.inventory import Devices, local_inventory
from supernode.cli.local.routerconf import router_config
from supernode.cli.local.specs import SpecError, load_deployments, parse_documents
from supernode.operator import planner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "local"

GOOD = """
apiVersion: supernode.io/v1alpha1
kind: ModelDeployment
metadata: {name: tiny}
spec:
  model: {name: tiny-model, source: "builtin://tiny"}
  accelerator: {type: cpu}
"""


def up(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supernode.cli", "up", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_bad_spec_exits_2_naming_the_field_and_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("replicas", "x") + "  replicas: -1\n  parallelism: {tensr: 2}\n")
    out = up(str(bad), "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert out.returncode == 2, out
    assert "spec.replicas: Input should be greater than or equal to 0" in out.stdout
    assert "spec.parallelism.tensr: Extra inputs are not permitted" in out.stdout


def test_a_cross_field_rule_names_its_field() -> None:
    text = GOOD + "  parallelism: {tensor: 2, expert: 3}\n"
    with pytest.raises(SpecError) as err:
        parse_documents(text, "f.yaml")
    expected = "f.yaml: spec.parallelism.expert: parallelism.expert must divide tensor x pipeline x data"
    assert err.value.problems == [expected]


def test_a_busy_port_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(GOOD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = up("ok.yaml", "--port", str(port), "--state-dir", "s", cwd=tmp_path)
    assert out.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in out.stdout


@pytest.mark.parametrize(("patch", "message"), [
    ('source: "builtin://tiny"', "spec.model.source: 'hf://org/x' is not available locally"),
    ("accelerator: {type: cpu}", "spec.engine.type: 'vllm' needs a cluster"),
])
def test_specs_the_local_runtime_cannot_run_are_refused(patch: str, message: str) -> None:
    text = GOOD.replace('source: "builtin://tiny"', 'source: "hf://org/x"') if "source" in patch else (
        GOOD + "  engine: {type: vllm}\n")
    with pytest.raises(SpecError) as err:
        parse_documents(text, "f.yaml")
    assert any(message in p for p in err.value.problems)


def test_a_shape_the_builtin_engine_cannot_run_is_refused_before_anything_starts() -> None:
    text = GOOD + "  parallelism: {tensor: 2, data: 2}\n"
    with pytest.raises(SpecError) as err:
        parse_documents(text, "f.yaml")
    assert any("spec.parallelism: the builtin engine runs pipeline=1, data=1" in p for p in err.value.problems)


def test_a_v4_checkpoint_the_engine_cannot_shard_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "v4.yaml"
    bad.write_text(GOOD.replace("builtin://tiny", "builtin://tiny-v4") + "  parallelism: {tensor: 3}\n")
    out = up(str(bad), "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert out.returncode == 2, out
    assert "spec.parallelism.tensor: 3 does not divide moe_intermediate_size=32" in out.stdout


def test_a_missing_file_and_a_wrong_kind_are_both_reported(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("kind: ConfigMap\n")
    with pytest.raises(SpecError) as err:
        load_deployments([tmp_path / "nope.yaml", tmp_path / "cm.yaml"])
    assert len(err.value.problems) == 2
    assert "expected ModelDeployment, got 'ConfigMap'" in err.value.problems[1]


def test_the_examples_are_valid_and_fit_this_machine() -> None:
    mds = load_deployments([EXAMPLES / "pro.yaml", EXAMPLES / "flash.yaml"])
    by_name = {md.metadata.name: md for md in mds}
    inventory = local_inventory(Devices(), hostname="dev")
    pro = planner.plan(by_name["pro"], inventory)
    flash = planner.plan(by_name["flash"], inventory)
    assert [len(g.pods) for g in pro.groups] == [2] and not pro.capacity.limited
    assert [len(g.pods) for g in flash.groups] == [1, 1] and not flash.capacity.limited
    assert Mode.THINK_MAX in by_name["pro"].spec.modes
    assert set(by_name["flash"].spec.modes) == {Mode.NON_THINK, Mode.THINK_HIGH}


def test_the_router_config_maps_the_retired_aliases_to_their_modes(tmp_path: Path) -> None:
    mds = load_deployments([EXAMPLES / "flash.yaml"])
    conf = router_config(mds, state_dir=tmp_path, port=9, tenants=None)
    flash = mds[0].spec.model.name
    assert conf["models"]["aliases"]["deepseek-chat"] == {"model": flash, "mode": "non-think"}
    assert conf["models"]["aliases"]["deepseek-reasoner"] == {"model": flash, "mode": "think-high"}
    assert conf["discovery"]["type"] == "local"


def test_the_example_tenants_parse_and_the_snippets_never_print_a_key() -> None:
    from supernode.cli.local.report import snippets
    from supernode.router.admission.tenants import parse_tenants

    path = EXAMPLES / "tenants.yaml"
    parsed = parse_tenants(path.read_text(), source=str(path))
    tiers = {t.id: t.tier for t in parsed.tenants}
    assert len(tiers) == 2 and len(set(tiers.values())) == 2
    text = snippets("http://127.0.0.1:8080", "m", with_key=True)
    assert "$SUPERNODE_API_KEY" in text and "sk-local" not in text


def test_a_deployment_needing_devices_this_machine_lacks_exits_1_with_the_planner_reason(tmp_path: Path) -> None:
    (tmp_path / "gpu.yaml").write_text(GOOD.replace("accelerator: {type: cpu}",
                                                    "accelerator: {type: nvidia-h200, devicesPerPod: 4}\n"
                                                    "  parallelism: {tensor: 4}"))
    from supernode.cli.local.inventory import probe_devices

    if probe_devices().cuda >= 4:  # pragma: no cover
        pytest.skip("this machine has 4 GPUs: the spec would fit")
    out = up("gpu.yaml", "--port", "0", "--state-dir", "s", cwd=tmp_path)
    assert out.returncode == 1, out.stdout
    assert "tiny: only 0 of 1 groups fit on this machine" in out.stdout
    assert "nvidia.com/gpu" in out.stdout


RUN_WITH_STANDINS = """
import sys
from supernode.cli.local.runtime import UpOptions, run_up
standin = sys.argv[1]
opts = UpOptions(files=sys.argv[2:3], port=int(sys.argv[3]), state_dir=sys.argv[4], detach=len(sys.argv) > 5,
                 engine_cmd=[sys.executable, standin, "engine"], router_cmd=[sys.executable, standin, "router"])
sys.exit(run_up(opts, out=lambda line: print(line, flush=True)))
"""


def test_sigterm_stops_the_whole_stack_and_exits_0(tmp_path: Path) -> None:
    import signal
    import time

    from supernode.cli.local.procs import pid_alive
    from supernode.cli.local.statefile import load_state

    (tmp_path / "two.yaml").write_text(GOOD + "  parallelism: {tensor: 2}\n")
    (tmp_path / "s" / "checkpoints" / "tiny").mkdir(parents=True)  # no engine needed for stand-ins
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    standin = str(Path(__file__).parent / "standins" / "standin.py")
    proc = subprocess.Popen([sys.executable, "-c", RUN_WITH_STANDINS, standin, "two.yaml", str(port), "s"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Serving." in line:
            break
    state = load_state(tmp_path / "s")
    assert state is not None and len(state.pids()) == 4, "".join(lines)  # up, router, 2 ranks
    assert "Bearer none" in "".join(lines), "without tenants the snippet needs no real key"
    # issue 10: a generated admin key in a 0600 file, its path printed, never the key; private state dir
    sdir = tmp_path / "s"
    key = (sdir / "admin.key").read_text().strip()
    assert key.startswith("sk-admin-") and len(key) > 30 and key not in "".join(lines)
    assert str(sdir.resolve() / "admin.key") in "".join(lines)
    assert stat.S_IMODE((sdir / "admin.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    private = [sdir / "router.yaml", sdir / "state.json", *(sdir / "logs").iterdir()]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in private} == {p.name: 0o600 for p in private}
    assert stat.S_IMODE((sdir / "logs").stat().st_mode) == 0o700
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "received SIGTERM" in out and "stopped" in out
    time.sleep(0.1)
    assert [p for p in state.pids() if pid_alive(p)] == []


def test_if_up_itself_is_killed_its_children_die_with_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: even kill -9 of `supernode up` leaves no engine rank or router running."""
    import time

    from supernode.cli.local.procs import pid_alive
    from supernode.cli.local.statefile import load_state

    (tmp_path / "one.yaml").write_text(GOOD)
    (tmp_path / "s" / "checkpoints" / "tiny").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    standin = str(Path(__file__).parent / "standins" / "standin.py")
    proc = subprocess.Popen([sys.executable, "-c", RUN_WITH_STANDINS, standin, "one.yaml", str(port), "s"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Serving." in line:
            break
    state = load_state(tmp_path / "s")
    assert state is not None
    children = [p for p in state.pids() if p != proc.pid]
    assert len(children) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in children if pid_alive(p)] == []


def test_the_printed_snippets_paste_as_they_are() -> None:
    import ast

    from supernode.cli.local.report import snippets

    text = snippets("http://127.0.0.1:8080", "deepseek-v4-pro", with_key=False)
    lines = text.splitlines()
    py = lines[lines.index("python - <<'EOF'") + 1:len(lines) - 1 - lines[::-1].index("EOF")]
    ast.parse("\n".join(py))
    assert any(line.startswith("curl -s http://127.0.0.1:8080/v1/chat/completions") for line in lines)


def test_detach_returns_once_serving_and_leaves_the_stack_running_until_sigint(tmp_path: Path) -> None:
    import signal
    import time

    from supernode.cli.local.procs import pid_alive
    from supernode.cli.local.statefile import load_state

    (tmp_path / "one.yaml").write_text(GOOD)
    (tmp_path / "s" / "checkpoints" / "tiny").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    standin = str(Path(__file__).parent / "standins" / "standin.py")
    out = subprocess.run([sys.executable, "-c", RUN_WITH_STANDINS, standin, "one.yaml", str(port), "s", "detach"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Serving." in out.stdout and "Running in the background" in out.stdout
    state = load_state(tmp_path / "s")
    assert state is not None and all(pid_alive(p) for p in state.pids())
    os.kill(state.up_pid, signal.SIGINT)
    deadline = time.monotonic() + 15
    while any(pid_alive(p) for p in state.pids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in state.pids() if pid_alive(p)] == []
    assert "stopped" in (tmp_path / "s" / "up.log").read_text()


def test_detach_reports_a_failure_with_the_exit_code(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(GOOD + "  replicas: -1\n")
    out = up("bad.yaml", "--detach", "--state-dir", "s", cwd=tmp_path)
    assert out.returncode == 2
    assert "spec.replicas" in out.stdout
