"""``python -m gbvnet.train``: see :mod:`gbvnet.train.cli`."""

from gbvnet.train.cli import main

main()
