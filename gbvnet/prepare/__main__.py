"""``python -m gbvnet.prepare``: see :mod:`gbvnet.prepare.cli`."""

from gbvnet.prepare.cli import main

main()
