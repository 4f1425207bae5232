"""``python -m ckpt``: the ``ckpt`` command (cli.py)."""

import sys

from .cli import main

sys.exit(main())
