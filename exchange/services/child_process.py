"""One worker process of the server's (spawn context), started on first use, replaced if it dies, gone
with the server: the base of the solver process (solver.py) and the round worker (round_worker.py)."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In the child: exit when the server process is gone, even killed with SIGKILL (the kernel's
    parent-death signal where it exists, and a watch thread in any case), so no orphan keeps running,
    holds a lock or keeps the server's stdout/stderr open."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="hetex-parent-watch", daemon=True).start()


class ChildProcess:
    """A single-worker process pool; subclasses name the child's initializer and its arguments."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def initializer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """The child's initializer and its arguments (default: only follow the server's life)."""
        return die_with_parent, (os.getpid(),)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            init, args = self.initializer()
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=init, initargs=args
            )
        return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `fn(*args)` in the child (started now if need be)."""
        return self._executor().submit(fn, *args)

    def processes(self) -> list[multiprocessing.Process]:
        """The child process, if started."""
        return list((getattr(self._pool, "_processes", None) or {}).values())

    def kill(self) -> None:
        """Stop the child now (a call in flight fails with BrokenProcessPool); the next use starts another."""
        for proc in self.processes():
            proc.kill()
        self.discard()

    def discard(self) -> None:
        """Forget the pool (after it broke or was killed); the next use starts another child."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
