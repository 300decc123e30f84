"""``python -m gbvnet.predict``: see :mod:`gbvnet.predict.cli`."""

from gbvnet.predict.cli import main

main()
