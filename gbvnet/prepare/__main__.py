"""``python -m gbvnet.prepare``: see :mod:`gbvnet.prepare`."""

from gbvnet.prepare import main

main()
