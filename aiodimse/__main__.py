"""``python -m aiodimse``: the command-line tools."""

import sys

from .cli import main

sys.exit(main())
