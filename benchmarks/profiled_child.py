"""Run a Python module under cProfile, profiling only between two signals (used by operator_scale.py --profile).

    python benchmarks/profiled_child.py OUT.prof MODULE ARGS...

SIGUSR1 starts profiling; SIGUSR2 stops it and writes the stats to OUT.prof (`python -m pstats OUT.prof`).
So a benchmark can profile exactly its measured window, not the process's start-up or idle time.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from types import FrameType


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: profiled_child.py OUT.prof MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[2]
    profiler = cProfile.Profile()

    def start(_sig: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
