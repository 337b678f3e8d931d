"""``python -m poisoncure.book``: build, check, print or describe the book (:func:`poisoncure.book.build.main`)."""

import sys

from .build import main

sys.exit(main())
