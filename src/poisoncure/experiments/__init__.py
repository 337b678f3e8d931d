"""The book's experiment layer, above the library's core and below the book tooling (``tests/test_layers.py``).

=====================  ===============================================================================================
``store``              the models of the book, trained once per :class:`Recipe` and cached, and the cached getters of
                       everything computed from them (gradients, features, the paper's defense, retrainings, ...)
``pipeline``           every defense on one attacked model in one call (:func:`pipeline.run_defenses`): what the
                       grids and chapter 7 share
``grids``              one module per grid of the runner that is more than a few lines: ``sweep`` (chapter 9),
                       ``hygiene`` (PoisHygiene, chapter 11; the defense itself is ``defenses.poishygiene``),
                       ``ensembles`` (chapter 12; the defense is ``defenses.weak_learners``), ``compare`` (every
                       defense of the book on the same models)
``report``             the typed report of one experiment (:class:`report.Report`, :class:`report.Scores`, ...): one
                       schema and one naming for every grid, versioned (``report.FORMAT``)
``plans``              the experiments of a profile's ``reproduce`` section (:func:`plans.plan`)
``result_files``       one checked, atomically written JSON file per experiment (:func:`result_files.load_results`)
``runner``             the resumable runner: each grid's run function, and running a plan (here, sharded, on Ray or
                       Slurm); ``python -m poisoncure.experiments``
``profiles``           the named parameter sets (``profiles/*.yml``)
``paper``              the numbers the papers report, for the columns labelled "paper"
``paper_tables``       the paper's Tables 1-5 rebuilt from the main grid's result files
``verdict``            which of the paper's claims held, counted from the result files
=====================  ===============================================================================================

``poisoncure.experiments.<name>`` also gives the store's names (``experiments.Recipe``, ``experiments.get_model``):
the recipes and the cached models are what the chapters talk about. The store is loaded on first use, so importing a
light module of this layer (the paper's numbers, the profiles) does not load torch.
"""

from __future__ import annotations

from ..lazy import module_getattr

#: the modules of this layer (anything else is looked up in :mod:`.store`)
SUBMODULES = ("store", "pipeline", "grids", "report", "plans", "result_files", "runner", "profiles", "paper",
              "paper_tables", "verdict")

__getattr__ = module_getattr(__name__, SUBMODULES, "store")
