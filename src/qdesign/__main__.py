"""``python -m qdesign``: see :mod:`qdesign.run.cli`."""

from qdesign.run.cli import main

raise SystemExit(main())
