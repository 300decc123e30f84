"""A griffe extension for the API reference, listed under mkdocstrings' ``extensions`` in ``mkdocs.yml``: the
docstrings' doctest examples (``>>>`` lines and their output, up to the next blank line) become ``pycon`` code
blocks, so Markdown shows them as code instead of reading ``x["a"]["b"]`` as a link, and Sphinx roles
(``:class:`~gbvnet.config.ModelConfig```) become inline code (``gbvnet.config.ModelConfig``)."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


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


def plain_roles(text: str) -> str:
    """``text`` with its Sphinx cross-reference roles as inline code.

    >>> plain_roles("See :func:`~gbvnet.search.space.apply` and :mod:`gbvnet.folds.protocols`.")
    'See ``gbvnet.search.space.apply`` and ``gbvnet.folds.protocols``.'
    """
    return ROLE.sub(r"``\1``", text)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest examples and plains the Sphinx roles of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(fence_doctests(obj.docstring.value))
