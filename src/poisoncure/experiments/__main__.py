"""``python -m poisoncure.experiments``: the runner's command line (:func:`poisoncure.experiments.runner.main`)."""

import sys

from .runner import main

sys.exit(main())
