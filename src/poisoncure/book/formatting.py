"""How the book writes its numbers: the conventions every table shares, in one place.

* :data:`MISSING`, what a cell holds where nothing was measured;
* :data:`YES` and :data:`NO`, what a yes-or-no cell reads (never Python's ``True`` / ``False``);
* :func:`for_reading`, both applied to a table; every table a chapter shows passes through it
  (:func:`poisoncure.book.plots.set_style` makes it the notebooks' HTML display of a DataFrame);
* :func:`dashed`, a table with :data:`MISSING` where a value is NaN;
* :func:`rounded`, the same, its numbers rounded for reading;
* :func:`mean_sd`, a mean and its spread over seeds;
* :func:`runs`, a list of integers with its consecutive runs as ranges ("1–4, 6").

The chapters' notebooks and the page modules (:mod:`poisoncure.book.pages`) write their tables through it, so that
every table of the book reads the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: what a shown cell holds where the quantity was not measured (or the method did not run)
MISSING = "—"
#: what a shown yes-or-no cell reads (a flag raised, a target named right, a test passed)
YES, NO = "✓", "✗"


def for_reading(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the book's cell conventions: :data:`YES` / :data:`NO` for a boolean cell, :data:`MISSING` for
    NaN or None (:func:`dashed`). Only the columns that hold such a cell change (to object dtype); the others keep their
    dtype, and so pandas' formatting of their numbers. Text that merely reads "True" (a parameter's written value) is
    left alone."""
    out = frame.copy()
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if col.isna().any() or col.map(_is_bool).any():
            out.isetitem(i, dashed(col).map(lambda v: (YES if v else NO) if _is_bool(v) else v))
    return out


def _is_bool(value) -> bool:
    return isinstance(value, bool | np.bool_)


def dashed(frame: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """``frame`` (a table or one column) with :data:`MISSING` for every NaN or None (object dtype, so a column may
    mix values and the dash)."""
    return frame.astype(object).where(frame.notna(), MISSING)


def rounded(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """``frame`` as a page shows it: numbers rounded to ``digits``, :data:`MISSING` for NaN; text columns pass
    unchanged."""
    return dashed(frame.round(digits))


def mean_sd(mean: float, sd: float, digits: int = 1) -> str:
    """A mean and its spread over seeds as every page writes them: "83.7 ± 0.3". The spaces matter: a browser narrows
    a table column no further than its longest word, and written "66.7±57.4" those words made chapter 7's
    every-defense table 698 px wide in the 688-px text column."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def runs(numbers: list[int]) -> str:
    """Sorted integers as a reader writes them, three or more consecutive ones as a range: [1, 2, 3, 4, 6, 8, 9] ->
    "1–4, 6, 8, 9"."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{numbers[i]}–{numbers[j]}")
            i = j + 1
        else:
            out.append(str(numbers[i]))
            i += 1
    return ", ".join(out)
