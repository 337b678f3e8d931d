"""The grids of the runner that are more than a plan and a loop: one module per chapter's grid (``sweep``,
``hygiene``, ``ensembles``) and the all-defenses comparison (``compare``); the ``main``, ``reverse`` and ``learning``
grids live in :mod:`..runner`."""
