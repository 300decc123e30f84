"""The worker processes of a preparation and its signals: :func:`worker_pool` prepares subjects in worker
processes (or in this process, :class:`Inline`), :func:`stop_workers` stops them at once after an error or
Ctrl-C, and :func:`signals_ignored` keeps a second Ctrl-C or SIGTERM from cutting the cleanup short.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ProcessPoolExecutor


class _Lazy:
    """A future for the one-process path: the work runs when ``result()`` is first called."""

    def __init__(self, fn, args):
        self._fn, self._args = fn, args

    def result(self):
        return self._fn(*self._args)


class Inline:
    """The executor interface, running each job in this process when its result is asked for."""

    def submit(self, fn, *args) -> _Lazy:
        return _Lazy(fn, args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def worker_pool(workers: int, subjects: int) -> ProcessPoolExecutor | Inline:
    """Worker processes for ``subjects`` subjects to prepare, or this process where one worker is asked for or
    one subject is to be done.

    The platform's default start method (fork on Linux before Python 3.14): workers start at once, without
    re-importing the caller's __main__ (torch, for a training script); they run numpy/pyarrow/OpenCV only.
    """
    if workers > 1 and subjects > 1:
        return ProcessPoolExecutor(min(workers, subjects), initializer=_worker_signals)
    return Inline()


def _worker_signals() -> None:
    """Worker start-up: Ctrl-C (sent to the whole terminal process group) is the main process's to handle (it
    stops the workers and removes what they wrote); SIGTERM ends a worker quietly (the main process's handler,
    inherited by fork, is not the worker's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_workers(pool) -> None:
    """Cancel what has not started and stop the worker processes now (a subject with faces takes minutes)."""
    if isinstance(pool, ProcessPoolExecutor):
        for process in list((pool._processes or {}).values()):  # Python < 3.14 has no public terminate_workers()
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def signals_ignored():
    """Ignore SIGINT / SIGTERM while cleaning up (a second Ctrl-C must not cut the cleanup short; masking them
    in this thread would not do: the kernel hands them to another thread, Python raises them here anyway);
    returns the callable that restores the handlers. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, handler) for sig, handler in held.items()]
