"""The source tree has no import circles (every import counts, at module level or inside a function), and every
command's entry point, the old spellings included, still starts."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREE = ("gbvnet", "evaluation", "tune", "bench", "tests")  # every Python folder of the repository


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_graph() -> dict[str, set[str]]:
    """Module -> the repository's modules it imports (``from pkg import mod`` names the module ``pkg.mod``)."""
    modules = {module_name(p): p for top in TREE for p in (REPO / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in TREE:
                submodules = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                edges |= submodules or {node.module}
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_tree_has_no_import_circle():
    graph = imports_graph()
    assert {"gbvnet.train.loop", "gbvnet.train.launch", "gbvnet.data.storage"} <= graph.keys()
    assert "gbvnet.train.loop" in graph["gbvnet.train.launch"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert "gbvnet.evaluation.loso" in graph["evaluation.loso"]  # the entry points are read too


# Every command as users type it (the evaluation and tune entry points are thin modules over gbvnet's packages)
COMMANDS = [
    ["-m", "gbvnet.prepare"], ["-m", "gbvnet.train"], ["-m", "gbvnet.predict"], ["-m", "gbvnet.data.synthetic"],
    ["-m", "gbvnet.models"], ["tune/search.py"], ["-m", "evaluation.loso"], ["-m", "evaluation.subject_dependent"],
    ["-m", "evaluation.gap"], ["-m", "evaluation.benchmark"], ["-m", "evaluation.report"],
    ["-m", "evaluation.run"], ["-m", "gbvnet.evaluation.loso"], ["-m", "gbvnet.search.cli"],
]


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")  # imported earlier
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[-1])
def test_every_command_starts_from_its_entry_point(command, monkeypatch, capsys):
    """``--help`` of every command, run as ``python`` runs it (``runpy``, in this process: a process each would pay
    for importing torch and Ray again), prints that command's usage."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", [command[-1], "--help"])
    with pytest.raises(SystemExit) as stop:
        if command[0] == "-m":
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(REPO / command[0]), run_name="__main__")
    assert stop.value.code in (0, None)
    usage = capsys.readouterr().out.splitlines()[0]
    name = {"gbvnet.evaluation.loso": "evaluation.loso", "gbvnet.search.cli": "tune/search.py"}.get(command[-1],
                                                                                                  command[-1])
    assert usage.startswith(f"usage: python {'' if name.endswith('.py') else '-m '}{name} "), usage
