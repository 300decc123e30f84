"""A griffe extension for the API reference: the docstrings' doctest examples (``>>>`` lines and their output, up
to the next blank line) become ``pycon`` code blocks, so Markdown shows them as code instead of reading
``x["a"]["b"]`` as a link. Listed under mkdocstrings' ``extensions`` in ``mkdocs.yml``."""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines (from a ``>>>`` line to the next blank line) fenced as ``pycon``.

    >>> fence_doctests("Sum.\\n>>> 1 + 1\\n2\\n\\nDone.").splitlines()
    ['Sum.', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    out, block = [], False
    for line in text.splitlines():
        if not block and line.lstrip().startswith(">>>"):
            out.append("```pycon")
            block = True
        elif block and not line.strip():
            out.append("```")
            block = False
        out.append(line)
    if block:
        out.append("```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest examples of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
