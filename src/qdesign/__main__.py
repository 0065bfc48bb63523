"""``python -m qdesign``: see :mod:`qdesign.cli`."""

from qdesign.cli import main

raise SystemExit(main())
