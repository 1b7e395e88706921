"""``python -m cohort.cli``: the ``cohort`` command without the console script."""

import sys

from cohort.cli import main

sys.exit(main())
