"""``tests/run_parallel.py``, what ``make test`` runs: two pytest sessions that together run the whole suite once."""

from __future__ import annotations

import signal

from tests.run_parallel import IN_PROCESS, NO_TESTS, ROOT, ending, exit_code, failure_report, sessions


def test_the_two_sessions_split_the_test_files_without_leaving_one_out():
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
    assert set(IN_PROCESS) <= files and len(set(IN_PROCESS)) == len(IN_PROCESS)
    run = sessions(["-q", "-x"])
    assert run["in-process"] == ["-q", "-x", *IN_PROCESS]
    ignored = {a.removeprefix("--ignore=") for a in run["rest"] if a.startswith("--ignore=")}
    assert run["rest"][:2] == ["-q", "-x"] and ignored == set(IN_PROCESS)  # the rest: pytest's collection minus those
    assert not [a for a in run["rest"][2:] if not a.startswith("--ignore=")]  # nothing else narrows it
    for path in IN_PROCESS:  # the in-process files are the ones sharing the session's Ray or evaluated runs
        text = (ROOT / path).read_text()
        assert "ray_session" in text or "evaluations" in text, path


def test_the_suite_fails_when_either_session_fails():
    assert exit_code([0, 0]) == 0
    assert exit_code([1, 0]) == 1 and exit_code([0, 2]) == 2
    assert exit_code([NO_TESTS, 0]) == 0  # -k left one session nothing to run
    assert exit_code([NO_TESTS, NO_TESTS]) == NO_TESTS
    assert exit_code([NO_TESTS, 1]) == 1


def test_a_session_killed_by_a_signal_fails_the_suite_and_is_named():
    assert exit_code([0, -signal.SIGSEGV]) == 128 + signal.SIGSEGV  # as a shell reports it, not 245
    assert exit_code([-signal.SIGKILL, 1]) == 128 + signal.SIGKILL
    assert ending("rest", -signal.SIGSEGV) == "[rest] session killed by SIGSEGV"
    assert ending("in-process", 1) == "[in-process] session ended with exit code 1"


def test_a_failed_session_is_named_last_with_its_last_lines():
    tail = ["tests/test_x.py::test_y FAILED\n", "Fatal Python error: Segmentation fault\n",
            '  File "gbvnet/x.py", line 3 in f\n', "Extension modules: numpy, torch._C (total: 2)\n"]
    report = failure_report("rest", -signal.SIGSEGV, tail).splitlines()
    assert report[0] == "[rest] session killed by SIGSEGV; its last lines:"
    assert report[1:-1] == ["[rest] tests/test_x.py::test_y FAILED", "[rest] Fatal Python error: Segmentation fault",
                            '[rest]   File "gbvnet/x.py", line 3 in f']  # not the modules' one long line
    assert report[-1] == "[rest] session killed by SIGSEGV"  # the last line of make test's output
