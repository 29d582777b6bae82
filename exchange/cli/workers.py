"""`hetex serve --workers N`: N forked server processes accepting on one listening socket, supervised.

The parent binds the socket (before any database access), migrates the schema and creates the exchange key
once, then forks the workers; each runs the whole service (its own event loop, database pool, connection
guard and solver) on the inherited socket, and the kernel hands each new connection to one of them. The
parent only supervises: a worker that exits is started again (a worker failing within seconds of its
start, repeatedly, stops the whole server with exit 1); SIGTERM/SIGINT is passed to every worker, each
drains as a single `hetex serve` does, and after the grace period the stragglers are killed. The timed
duties run in one worker at a time through the duties lease (exchange/services/lease.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("hetex.workers")

QUICK_EXIT_SECONDS = 5.0
MAX_QUICK_EXITS = 5
POLL_SECONDS = 0.1


@dataclass
class Supervisor:
    """Forks `count` workers running `child(slot)` and keeps them running until a signal."""

    count: int
    child: Callable[[int], int]
    grace_seconds: float
    children: dict[int, int] = field(default_factory=dict)  # pid -> slot
    started: dict[int, float] = field(default_factory=dict)  # slot -> monotonic start
    quick_exits: int = 0
    stopping: bool = False
    failed: bool = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("signal %s: stopping %d workers", signal.Signals(signum).name, len(self.children))
        self.stopping = True

    def spawn(self, slot: int) -> None:
        """Fork worker `slot`."""
        pid = os.fork()
        if pid == 0:  # the worker: default signal dispositions (its event loop installs its own)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = self.child(slot)
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot
        self.started[slot] = time.monotonic()
        log.info("worker %d started (pid %d)", slot, pid)

    def reap(self) -> list[tuple[int, int]]:
        """(slot, exit status) of every worker that exited since the last call."""
        out = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            slot = self.children.pop(pid, None)
            if slot is not None:
                out.append((slot, os.waitstatus_to_exitcode(status)))
        return out

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; 0 after a clean stop, 1 when workers kept failing at start."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in range(self.count):
            self.spawn(slot)
        while not self.stopping:
            time.sleep(POLL_SECONDS)
            for slot, code in self.reap():
                if self.stopping:
                    break
                quick = time.monotonic() - self.started[slot] < QUICK_EXIT_SECONDS
                self.quick_exits = self.quick_exits + 1 if quick else 0
                if self.quick_exits > MAX_QUICK_EXITS:
                    log.error("workers keep exiting at start (last: worker %d, status %d): stopping", slot, code)
                    self.stopping = self.failed = True
                    break
                log.warning("worker %d exited (status %d): starting it again", slot, code)
                self.spawn(slot)
        self.stop_all()
        return 1 if self.failed else 0

    def stop_all(self) -> None:
        """SIGTERM every worker, wait for the grace period (plus clean-up time), then SIGKILL the rest."""
        for pid in list(self.children):
            with _gone():
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds + 15
        while self.children and time.monotonic() < deadline:
            for slot, code in self.reap():
                log.info("worker %d stopped (status %d)", slot, code)
            time.sleep(POLL_SECONDS)
        for pid, slot in list(self.children.items()):
            log.warning("worker %d (pid %d) did not stop in time: killed", slot, pid)
            with _gone():
                os.kill(pid, signal.SIGKILL)
            with _gone():
                os.waitpid(pid, 0)
            self.children.pop(pid, None)


def _gone() -> contextlib.suppress:
    """Ignore a worker that already exited."""
    return contextlib.suppress(ProcessLookupError, ChildProcessError)
