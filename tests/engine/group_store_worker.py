"""One rank of a real gloo group for the group-store tests (run as a script; not collected by pytest).

Rank, world, leader and group secret come from the SUPERNODE_* env. Prints ``READY {json}`` with the
TCP addresses this process listens on, then obeys stdin lines: ``allreduce`` prints ``SUM <value>``,
``exit`` leaves the group cleanly. A lost peer exits with the heartbeat's status (3).
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from supernode.engine.distributed import DistEnv, Heartbeat, init_group


def listening_addresses() -> list[str]:
    """``host:port`` of every listening TCP socket of this process (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexaddr)
                if width == 8:
                    host = ".".join(str(b) for b in raw[::-1])
                else:
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    host = "[" + b"".join(words).hex() + "]"
                out.append(f"{host}:{int(hexport, 16)}")
    return out


def main() -> int:
    env = DistEnv.from_env()
    group = init_group(env, "cpu", 30)
    beat = Heartbeat(env, 0.2, 2.0, endpoint=(group.host, group.port))
    beat.start()
    print("READY " + json.dumps({"rank": env.rank, "listening": listening_addresses()}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "allreduce":
            t = torch.ones(4) * (env.rank + 1)
            dist.all_reduce(t)
            print(f"SUM {t[0].item()}", flush=True)
        elif cmd == "exit":
            break
    beat.stop()
    dist.barrier()
    dist.destroy_process_group()
    group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
