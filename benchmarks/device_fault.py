"""Device fault → router ejection → group ready again, against the test Kubernetes API on 127.0.0.1.

Each trial starts the emulator, the fake kubelet, the real kopf operator (in-process thread) and the
router's real Kubernetes discovery (tests/operator/fault_scenario.py), applies a 2-group Ascend
ModelDeployment over three SuperPoDs, then writes the device plugin's ConfigMap reporting a SeparateNPU
chip on group 0's leader node, and times from that write to:
  (a) router discovery no longer offering group 0 (target: at most 1 s);
  (b) discovery offering group 0 again, rebuilt on the healthy SuperPoD;
  (c) the ModelDeployment's status reporting both groups ready again.
Side by side with a baseline: the same operator with the ConfigMap event not reconciling
(`fault_events=False`), so the fault is acted on at the next resync, as a periodic health check would.
(b) and (c) include the StatefulSet-mode leader label and the status, which wait for a pass after the
new pods are up (the resync interval); with LeaderWorkerSet the leader label comes from LWS itself.

    python benchmarks/device_fault.py --trials 5 --resync 10
    python benchmarks/device_fault.py --smoke     # one trial each, resync 0.5 s (run by the tests)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "operator"), str(ROOT / "tests")]  # emulator, fake cluster, builders

import kmock  # noqa: E402
from ascend_reports import ascend_report  # noqa: E402
from fault_scenario import FaultScenario, ascend_md  # noqa: E402
from k8s_emulator import K8sEmulator  # noqa: E402


async def trial(resync: float, events: bool) -> tuple[float, float, float]:
    async with K8sEmulator(strict=False) as emu, kmock.Server(emu) as srv:
        try:
            async with FaultScenario(emu, str(srv.url).rstrip("/"), resync=resync, fault_events=events) as s:
                await s.serving(ascend_md(replicas=2))
                old = s.groups()["0"]["metadata"]["uid"]
                node = s.pods("0")[0]["spec"]["nodeName"]
                t0 = await s.report(ascend_report(node).chips(16).fault("Ascend910-3", "SeparateNPU", "8C1F8608"))
                ejected = await s.until(lambda: 0 not in s.routable(), timeout=2 * resync + 10, what="ejected")
                routed = await s.until(lambda: s.routable() == {0, 1} and s.groups()["0"]["metadata"]["uid"] != old,
                                       timeout=4 * resync + 10, what="routed again")
                ready = await s.until(lambda: s.status().get("readyReplicas") == 2
                                      and s.groups()["0"]["metadata"]["uid"] != old, timeout=4 * resync + 10,
                                      what="ready again")
                return ejected - t0, routed - t0, ready - t0
        finally:
            emu.close_watches()


def summary(samples: list[tuple[float, float, float]], i: int) -> float:
    return statistics.median(s[i] for s in samples)


async def main(trials: int, resync: float) -> None:
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for _ in range(trials):
        for events in (True, False):  # interleaved: both see the same machine load
            results[events].append(await trial(resync, events))
    print(f"device fault under a running group: {trials} trial(s) per mode, resync every {resync:g}s, "
          "median seconds from the ConfigMap write")
    print(f"{'':34}{'event-driven':>14}{'resync-only':>14}{'ratio':>8}")
    for i, label in enumerate(("(a) router stops routing to it", "(b) router routes to it again",
                               "(c) status: all groups ready")):
        new, base = summary(results[True], i), summary(results[False], i)
        print(f"{label:34}{new:>14.3f}{base:>14.3f}{base / new if new else float('inf'):>7.1f}x")
    worst = max(s[0] for s in results[True])
    print(f"(a) event-driven worst {worst:.3f}s: {'within' if worst <= 1.0 else 'OVER'} the 1 s target")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--resync", type=float, default=10.0, help="operator resync interval (its default: 10)")
    parser.add_argument("--smoke", action="store_true", help="one trial per mode, resync 0.5 s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.smoke:
        args.trials, args.resync = 1, 0.5
    asyncio.run(main(args.trials, args.resync))
