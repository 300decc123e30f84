"""The whole test suite as two pytest sessions at once (what ``make test`` runs): ``python tests/run_parallel.py
[pytest options]``.

The suite's long tests wait much of the time: on Ray starting, on a Slurm controller, on jobs submitted to a
two-node cluster, on a tracking server's timeouts. Run one after another they kept 2 idle cores 70-80 % busy
(1564 s for the suite); two sessions side by side fill those waits with the other session's work (1224 s, the same
tests, same machine and day).

* ``IN_PROCESS``: the files that share the session's evaluated runs (the ``evaluations`` fixture) and most of
  those whose evaluations run in the session's own process, on its Ray instance (the ``ray_session`` fixture).
* the rest: every other file (new ones included): command-line runs in their own processes, the clusters, Slurm and
  the local AWS, the unit tests and the doctests, and a few in-process evaluations (AMIGOS, the gap, nested, seeds),
  placed there so that both sessions end at about the same time. This session starts a Ray instance of its own
  for those.

Together the two sessions run exactly what ``pytest`` alone runs; the same options go to both. Their output is
printed line by line as it comes, each line prefixed with its session's name. The exit code is the first non-zero
one of the sessions (5, no test collected, only when neither collected one; 128 + N for a session ended by signal
N, as a shell says it). A session that fails is named again at the very end, with its last lines, so that the tail
of the output (all a CI page may show) says which session failed and why, a crash's traceback included. Ctrl-C
reaches both sessions (they share the terminal's process group) and each stops as ``pytest`` alone does. To run
some tests, run ``pytest`` itself.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_PROCESS = ("tests/test_baselines.py", "tests/test_benchmark.py", "tests/test_cli.py", "tests/test_evaluation.py",
              "tests/test_final_model.py", "tests/test_progress.py",
              "tests/test_registries.py", "tests/test_report.py", "tests/test_search.py",
              "tests/test_tracking.py", "tests/test_train.py")
NO_TESTS = 5  # pytest's exit code when a session collected no test
TAIL_LINES = 60  # a failed session's last lines, printed again at the end


def sessions(options: list[str]) -> dict[str, list[str]]:
    """Each session's pytest arguments: ``options``, then what it runs (the rest: everything ``IN_PROCESS`` leaves
    out of pytest's own collection, so that a new test file lands there without being listed)."""
    return {"in-process": [*options, *IN_PROCESS],
            "rest": [*options, *(f"--ignore={path}" for path in IN_PROCESS)]}


def exit_code(codes: list[int]) -> int:
    """The suite's exit code from the sessions' return codes (:data:`NO_TESTS` counts as a failure only if every
    session had it: an option such as ``-k`` may leave one session nothing to run; a session ended by signal N,
    return code -N, gives 128 + N)."""
    failed = [128 - code if code < 0 else code for code in codes if code not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return NO_TESTS if all(code == NO_TESTS for code in codes) else 0


def ending(name: str, code: int) -> str:
    """How session ``name`` ended, in words, from its return code."""
    if code < 0:
        try:
            return f"[{name}] session killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"[{name}] session killed by signal {-code}"
    return f"[{name}] session ended with exit code {code}"


def failure_report(name: str, code: int, tail) -> str:
    """What is printed at the end for session ``name`` that ended with return code ``code``: how it ended, its last
    lines ``tail`` (without the one long line listing a crash's extension modules), and how it ended again, last."""
    lines = [f"[{name}] {line}" for line in tail if not line.startswith("Extension modules:")]
    return "".join([f"{ending(name, code)}; its last lines:\n", *lines, f"{ending(name, code)}\n"])


def relay(name: str, stream, lock: threading.Lock, tail: collections.deque) -> None:
    """Print ``stream``'s lines, each prefixed with ``[name]``, keeping the last ones in ``tail``."""
    for line in stream:
        tail.append(line)
        with lock:
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def main(options: list[str]) -> int:
    missing = [path for path in IN_PROCESS if not (ROOT / path).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} listed in tests/run_parallel.py IN_PROCESS but not found", file=sys.stderr)
        return 4
    lock = threading.Lock()
    planned = sessions(options)
    procs, relays, tails = [], [], []
    for name, args in planned.items():
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", bufsize=1)
        tail = collections.deque(maxlen=TAIL_LINES)
        thread = threading.Thread(target=relay, args=(name, proc.stdout, lock, tail))
        thread.start()
        procs.append(proc)
        relays.append(thread)
        tails.append(tail)
    codes = []
    for proc, thread in zip(procs, relays, strict=True):
        while True:
            try:  # Ctrl-C reached the sessions too: wait for them to stop and report
                codes.append(proc.wait())
                break
            except KeyboardInterrupt:
                continue
        thread.join()
    for name, code, tail in zip(planned, codes, tails, strict=True):
        if code not in (0, NO_TESTS):
            sys.stdout.write(failure_report(name, code, tail))
    return exit_code(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
