"""``python -m nslab``: the ``nslab`` command (:func:`nslab.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
