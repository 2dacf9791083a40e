"""Devices, rendezvous and liveness for one replica group's torch.distributed world.

Rank 0 (the leader) hosts the TCPStore on loopback behind a `StoreGate` on the group address, which
admits only ranks that prove the group secret (store_gate.py); followers reach it through a
`StoreTunnel`. Every rank publishes a heartbeat counter there from a background thread and watches
the others (followers watch the leader). A peer whose counter stops for `timeout_s`, or a store that
stops answering, is fatal: the rank exits non-zero (the operator restarts the whole group) instead of
hanging in a collective.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from supernode.api.constants import (
    ENV_GROUP_BIND_ADDR,
    ENV_GROUP_SECRET,
    ENV_LEADER_ADDR,
    ENV_LEADER_PORT,
    ENV_RANK,
    ENV_WORLD_SIZE,
)
from supernode.engine.store_gate import StoreGate, StoreTunnel, listen

log = logging.getLogger(__name__)

PEER_LOST_EXIT_CODE = 3  # process exit status when a peer rank is lost
BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}


class DeviceUnavailableError(RuntimeError):
    """The requested device type cannot be used in this process."""


@dataclass(frozen=True, slots=True)
class DistEnv:
    """Where this process sits in the group. rank = node_rank * nproc_per_node + local_rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    leader_addr: str = "127.0.0.1"
    leader_port: int = 29500
    secret: str = field(default="", repr=False)  # SUPERNODE_GROUP_SECRET: proves membership to the store
    bind_addr: str = ""  # SUPERNODE_GROUP_BIND_ADDR: the leader's store address (default: leader_addr resolved)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, nproc_per_node: int = 1, local_rank: int = 0) -> DistEnv:
        """Read SUPERNODE_RANK/WORLD_SIZE (node ranks, i.e. pods) and the leader address from `env`."""
        env = os.environ if env is None else env
        try:
            node_rank = int(env.get(ENV_RANK, "0"))
            nodes = int(env.get(ENV_WORLD_SIZE, "1"))
            port = int(env.get(ENV_LEADER_PORT, "29500"))
        except ValueError as e:
            raise ValueError(f"{ENV_RANK}/{ENV_WORLD_SIZE}/{ENV_LEADER_PORT} must be integers: {e}") from e
        if nproc_per_node < 1 or not 0 <= local_rank < nproc_per_node:
            raise ValueError(f"local rank {local_rank} outside --nproc-per-node {nproc_per_node}")
        if nodes < 1 or not 0 <= node_rank < nodes:
            raise ValueError(f"{ENV_RANK}={node_rank} outside {ENV_WORLD_SIZE}={nodes}")
        return cls(
            rank=node_rank * nproc_per_node + local_rank,
            world_size=nodes * nproc_per_node,
            local_rank=local_rank,
            leader_addr=env.get(ENV_LEADER_ADDR, "127.0.0.1"),
            leader_port=port,
            secret=env.get(ENV_GROUP_SECRET, ""),
            bind_addr=env.get(ENV_GROUP_BIND_ADDR, ""),
        )

    def store_bind_addr(self) -> str:
        """The one address the leader's store listens on: the configured one, else the leader address's IP."""
        if self.bind_addr:
            return self.bind_addr
        try:
            return str(ipaddress.ip_address(self.leader_addr))
        except ValueError:
            return str(socket.getaddrinfo(self.leader_addr, None, type=socket.SOCK_STREAM)[0][4][0])


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """The torch device for `kind`, or DeviceUnavailableError saying why not."""
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError("device 'cuda' requested but CUDA is not available in this process")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if kind == "npu":
        if importlib.util.find_spec("torch_npu") is None:
            raise DeviceUnavailableError(
                "device 'npu' requested but torch_npu is not installed (pip install torch-npu)"
            )
        try:
            importlib.import_module("torch_npu")
        except (ImportError, RuntimeError) as e:
            raise DeviceUnavailableError(
                f"device 'npu' requested but torch_npu failed to load (Ascend CANN?): {e}"
            ) from e
        npu = getattr(torch, "npu", None)
        if npu is None or not npu.is_available():
            raise DeviceUnavailableError("device 'npu' requested but no Ascend NPU is visible")
        npu.set_device(local_rank)
        return torch.device("npu", local_rank)
    raise DeviceUnavailableError(f"unknown device {kind!r} (cpu, cuda or npu)")


@dataclass(slots=True)
class GroupStore:
    """This rank's handle on the group store: the client, the local endpoint more clients use, the gate or tunnel."""

    store: dist.TCPStore
    host: str
    port: int
    closer: StoreGate | StoreTunnel

    def close(self) -> None:
        self.closer.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def open_group_store(env: DistEnv, timeout_s: float) -> GroupStore:
    """Leader: the store on loopback plus its gate on the group address; follower: a tunnel to that gate."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if not env.secret:
        log.warning("no %s: the group store admits any client that reaches %s:%d",
                    ENV_GROUP_SECRET, env.leader_addr, env.leader_port)
    secret = env.secret.encode()
    closer: StoreGate | StoreTunnel
    if env.rank == 0:
        inner = listen("127.0.0.1", 0)
        host, port = inner.getsockname()[:2]
        store = dist.TCPStore(host, port, env.world_size, is_master=True, timeout=timeout,
                              wait_for_workers=False, master_listen_fd=inner.detach())
        closer = StoreGate(listen(env.store_bind_addr(), env.leader_port), port, secret).start()
        log.info("group store gate on %s:%d", *closer.address)
    else:
        closer = StoreTunnel(env.leader_addr, env.leader_port, secret, timeout_s).start()
        host, port = closer.address
        store = dist.TCPStore(host, port, env.world_size, is_master=False, timeout=timeout, wait_for_workers=False)
    return GroupStore(store, host, port, closer)


def init_group(env: DistEnv, device_kind: str, timeout_s: float) -> GroupStore:
    """Join the world (blocks until every rank arrived or `timeout_s`); returns the rendezvous store."""
    if device_kind == "cpu" and _is_loopback(env.leader_addr):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a loopback group's gloo pairs listen on loopback only
    group = open_group_store(env, timeout_s)
    dist.init_process_group(
        BACKENDS[device_kind], store=group.store, rank=env.rank, world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    log.info("rank %d/%d joined the group via %s:%d", env.rank, env.world_size, env.leader_addr, env.leader_port)
    return group


def exit_on_peer_loss(reason: str) -> None:
    """Default failure action: the main thread may be blocked inside a collective, so leave hard."""
    log.error("peer lost, exiting with status %d: %s", PEER_LOST_EXIT_CODE, reason)
    logging.shutdown()
    os._exit(PEER_LOST_EXIT_CODE)


class Heartbeat:
    """Publishes this rank's liveness counter and watches the peers' (leader: all; follower: the leader)."""

    def __init__(
        self,
        env: DistEnv,
        interval_s: float,
        timeout_s: float,
        on_failure: Callable[[str], None] = exit_on_peer_loss,
        endpoint: tuple[str, int] | None = None,
    ) -> None:
        self.env, self.interval_s, self.timeout_s, self.on_failure = env, interval_s, timeout_s, on_failure
        # where this rank reaches the store (GroupStore.host/port); the leader address only without a gate
        self.endpoint = endpoint or (env.leader_addr, env.leader_port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-rank{env.rank}", daemon=True)
        self._watch = [r for r in range(env.world_size) if r != env.rank] if env.rank == 0 else [0]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.interval_s * 4 + 1)

    def _run(self) -> None:
        try:
            store = dist.TCPStore(
                self.endpoint[0],
                self.endpoint[1],
                self.env.world_size,
                is_master=False,
                timeout=datetime.timedelta(seconds=self.timeout_s),
                wait_for_workers=False,
            )
        except Exception as e:
            self.on_failure(f"rank {self.env.rank}: cannot reach the group store: {e}")
            return
        seen = {r: (-1, time.monotonic()) for r in self._watch}
        while not self._stop.is_set():
            try:
                store.add(f"supernode/heartbeat/{self.env.rank}", 1)
                values = {r: store.add(f"supernode/heartbeat/{r}", 0) for r in self._watch}
            except Exception as e:
                if not self._stop.is_set():
                    self.on_failure(f"rank {self.env.rank}: group store unreachable (leader gone?): {e}")
                return
            now = time.monotonic()
            for r, value in values.items():
                if value != seen[r][0]:
                    seen[r] = (value, now)
                elif now - seen[r][1] > self.timeout_s:
                    if not self._stop.is_set():
                        self.on_failure(f"rank {r} silent for {now - seen[r][1]:.1f}s")
                    return
            self._stop.wait(self.interval_s)
