"""With `--router-replicas N` the local autoscaler reads every replica's signals (each queues on its own):
the ops ports come from the fleet's state file, and the pools of all replicas add up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from supernode.api.models import ModelDeployment
from supernode.cli.local.fleet import fleet_ops_urls, replica_config
from supernode.cli.local.scaling import SIGNALS_PATH, LocalScaler, _sample, merge_signals

SPEC = """
apiVersion: supernode.io/v1alpha1
kind: ModelDeployment
metadata: {name: flash}
spec:
  model: {name: flash-model, source: "builtin://tiny"}
  accelerator: {type: cpu}
  replicas: 1
  autoscaling: {minReplicas: 1, maxReplicas: 2}
"""


def pool(queued: int, in_flight: int, wait: float = 0.0, refused: int = 0) -> dict[str, Any]:
    return {"model": "flash-model", "mode": "non-think", "queued": queued, "inFlight": in_flight,
            "queuedTokens": 10 * queued, "oldestWaitSeconds": wait, "noCapacityTotal": refused}


def serve(body: dict[str, Any]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(body).encode() if self.path == SIGNALS_PATH else b"{}"
            self.send_response(200 if self.path == SIGNALS_PATH else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # shutdown() waits for serve_forever's next poll (0.5 s by default)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return srv


@pytest.fixture
def replicas() -> Iterator[list[ThreadingHTTPServer]]:
    servers = [serve({"pools": [pool(3, 2, wait=1.5, refused=1)]}), serve({"pools": [pool(4, 1, wait=0.5)]})]
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


def test_merged_signals_add_up_the_pools_of_every_replica() -> None:
    body = merge_signals([{"pools": [pool(3, 2, wait=1.5)]}, None, {"pools": [pool(4, 1, wait=0.5)]}])
    s = _sample(0.0, body, {"flash-model"}, {})
    assert (s.queued, s.in_flight, s.queued_tokens, s.queue_wait) == (7, 3, 70, 1.5)
    assert merge_signals([None, None]) is None


def test_the_scaler_reads_each_replica_listed_in_the_fleet_state(tmp_path: Path,
                                                                 replicas: list[ThreadingHTTPServer]) -> None:
    state = tmp_path / "router-fleet.json"
    state.write_text(json.dumps({"replicas": [
        {"name": f"replica-{i}", "port": 1, "opsPort": s.server_address[1]} for i, s in enumerate(replicas)]}))
    urls = fleet_ops_urls(state)
    assert urls == [f"http://127.0.0.1:{s.server_address[1]}" for s in replicas]
    scaler = LocalScaler([ModelDeployment.model_validate(yaml.safe_load(SPEC))], lambda: fleet_ops_urls(state))
    try:
        got = _sample(0.0, scaler._signals(), {"flash-model"}, {})
        assert (got.queued, got.in_flight) == (7, 3)
        state.write_text(json.dumps({"replicas": [{"name": "replica-0", "port": 1,
                                                   "opsPort": replicas[1].server_address[1]}]}))
        got = _sample(0.0, scaler._signals(), {"flash-model"}, {})
        assert (got.queued, got.in_flight) == (4, 1)  # re-read each step: a restarted replica's new port
    finally:
        scaler.close()


def test_each_replica_config_gets_its_own_ops_port(tmp_path: Path) -> None:
    source = tmp_path / "router.yaml"
    source.write_text(yaml.safe_dump({"server": {"host": "127.0.0.1", "port": 8080, "metrics_port": 0}}))
    (a, port_a), (b, port_b) = replica_config(source, "replica-0"), replica_config(source, "replica-1")
    assert port_a and port_b and port_a != port_b
    assert yaml.safe_load(a.read_text())["server"]["metrics_port"] == port_a
    assert yaml.safe_load(b.read_text())["server"]["metrics_port"] == port_b
    assert fleet_ops_urls(tmp_path / "missing.json") == []
