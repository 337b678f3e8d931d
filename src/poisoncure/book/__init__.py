"""The book tooling, the top layer (``tests/test_layers.py``): nothing below imports it.

=================  ===================================================================================================
``build``          executes the chapters with papermill (profiles, parameter overrides, the shared models first),
                   renders the book, checks the HTML, prints the PDF; ``python -m poisoncure.book build``
``browser``        the real-browser check of every page (readability, figures, tables) and the PDF printer
``parameters``     the valid values of every notebook parameter, checked before a chapter runs
``plots``          the book's figure style: column width, body-size text, collision check
``pages``          what each chapter shows, built from its results: tables, figures and the sentences that read them
=================  ===================================================================================================

``poisoncure.book.<name>`` also gives the names of :mod:`.build` (``book.notebook_sources``, ``book.check``), loaded
on first use.
"""

from __future__ import annotations

from ..lazy import module_getattr

#: the modules of this layer (anything else is looked up in :mod:`.build`)
SUBMODULES = ("build", "browser", "parameters", "plots", "pages")

__getattr__ = module_getattr(__name__, SUBMODULES, "build")
