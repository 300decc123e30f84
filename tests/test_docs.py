"""The README and the documentation site under docs/: the site builds with ``mkdocs build --strict`` (a broken
link or anchor, a page missing from the nav, a docstring mkdocstrings cannot render fail it), every shell
example says whether a test runs it, and the README's Python example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# the line right before a fenced example: either why no test runs it, or the test file that does
NOT_RUN = re.compile(r"<!-- not run here: \S[^>]* -->")
RUN_BY = re.compile(r"<!-- run by (tests/test_\w+\.py) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def examples(page: Path, lang: str) -> list[tuple[str, str]]:
    """``(marker line, code)`` of each fenced ``lang`` block of ``page``; the marker is the line before it."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) == lang:
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            found.append((before, match.group(2)))
    return found


def test_the_site_builds_strict(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    for page in ("index.html", "getting-started/index.html", "evaluation/index.html", "api/folds/index.html"):
        assert (tmp_path / page).is_file()
    api = (tmp_path / "api" / "folds" / "index.html").read_text()
    assert "gbvnet.folds.protocols" in api and "register_protocol" in api  # the docstrings, not only the headings


def test_every_shell_example_is_run_by_a_test_or_marked_not_run():
    unmarked, missing = [], []
    for page in PAGES:
        for before, code in examples(page, "bash"):
            run_by = RUN_BY.fullmatch(before)
            if run_by and not (ROOT / run_by.group(1)).is_file():
                missing.append(f"{page.relative_to(ROOT)}: {run_by.group(1)}")
            elif not run_by and not NOT_RUN.fullmatch(before):
                unmarked.append(f"{page.relative_to(ROOT)}: {code.splitlines()[0]}")
    assert not unmarked, f"add '<!-- not run here: why -->' before these (or run them in a test): {unmarked}"
    assert not missing, f"run by a test that does not exist: {missing}"


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text())
    assert links and not [link for link in links if not (ROOT / link).is_file()]


def test_the_readme_python_example_runs(capsys):
    runnable = [code for before, code in examples(ROOT / "README.md", "python")
                if before == "<!-- run by tests/test_docs.py -->"]
    assert len(runnable) == 1
    exec(compile(runnable[0], "README.md", "exec"), {})
    assert capsys.readouterr().out.split()[:4] == ["torch.Size([2,", "2])", "torch.Size([2,", "2,"]


def test_the_api_reference_covers_every_module():
    listed = set(re.findall(r"^::: ([\w.]+)$", "".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md")),
                            re.M))
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for path in (ROOT / "gbvnet").rglob("*.py")
               if path.name != "__main__.py"}
    assert modules - listed == set(), "add them to a docs/api page (::: module)"
    assert listed - modules == set(), "listed in docs/api but not in the tree (moved or removed?)"
