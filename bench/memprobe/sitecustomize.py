"""bench/worker_memory.py's probe: put on PYTHONPATH of a worker it starts
with ``--trace``, and only there.

When MEMPROBE_DIR is set and tracemalloc is tracing (PYTHONTRACEMALLOC=N),
SIGUSR2 makes the process that receives it write a tracemalloc snapshot to
MEMPROBE_DIR/snapshot-<pid>-<n>.pickle, then rename it to ...-<n>.done so a
reader never sees half a file; processes forked from it (a worker's pool)
stop tracing. Without MEMPROBE_DIR it does nothing.
"""
from __future__ import annotations

import os


def _install() -> None:
    import signal
    import tracemalloc

    directory = os.environ["MEMPROBE_DIR"]
    taken = [0]

    def dump(signum, frame):
        if not tracemalloc.is_tracing():
            return
        taken[0] += 1
        path = os.path.join(directory, f"snapshot-{os.getpid()}-{taken[0]}")
        tracemalloc.take_snapshot().dump(path + ".pickle")
        os.replace(path + ".pickle", path + ".done")

    signal.signal(signal.SIGUSR2, dump)
    # The pool's processes are forked from the traced one: untraced, they run at full speed.
    os.register_at_fork(after_in_child=tracemalloc.stop)


if os.environ.get("MEMPROBE_DIR"):
    _install()
