"""Chapter 8 (*The paper's tables, rerun*): the paper's Tables 1-5 as the page shows them.

The tables themselves (paper, ours, difference and spread per cell) are computed by
:mod:`poisoncure.experiments.paper_tables` from the result files; this module only decides how they read.
"""

from __future__ import annotations

import pandas as pd

from ...experiments import paper_tables
from .. import formatting


def shown(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table of :mod:`~poisoncure.experiments.paper_tables` (Tables 1-5) as a page shows it: rounded to
    ``digits``, a dash where nothing was measured, and, in its ``before_after_table`` and ``detection_table``, the
    spread over seeds inside the "ours" cell ("83.7 ± 0.3") instead of a
    :data:`~poisoncure.experiments.paper_tables.SPREAD` column beside it. The spread exists only for rows with
    several seeds (pair 1 of the compare grid), so its own columns were mostly dashes and made Tables 2 and 4 wider
    than the text column (755 and 769 px in 688 px)."""
    out = formatting.rounded(frame, digits)
    spread = [c for c in frame.columns if c[1] == paper_tables.SPREAD]
    for col, _ in spread:
        sd = frame[(col, paper_tables.SPREAD)]
        has = sd.notna()  # two seeds or more, so "ours" (their mean) is there too
        out.loc[has, (col, "ours")] = [formatting.mean_sd(m, s, digits)
                                       for m, s in zip(frame.loc[has, (col, "ours")], sd[has], strict=True)]
    return out.drop(columns=spread)


def wrong_base_text(rows: pd.DataFrame) -> str:
    """The sentence that ties the paper's method's wrong base classes to its filtering and repair numbers: in the
    experiments of ``rows`` (:func:`~poisoncure.experiments.paper_tables.experiment_rows`) whose target was found
    but not the base, the filter scores the target class with the wrong label's gradients and the neutralization
    relabels the filtered images to that class. Their sensitivity and attack success after the defense, beside the
    medians of the experiments where both were found; ``""`` when no repaired experiment named a wrong base."""
    repaired = rows[rows["target found"] & rows["repaired"]]
    wrong, both = repaired[~repaired["base found"]], repaired[repaired["base found"]]
    if not len(wrong):
        return ""
    text = (f"Where the target was found but another class was named as the base "
            f"({paper_tables.by_poison(wrong)}), the filter scores the target class with that label's gradients and "
            "the neutralization relabels the filtered images to it: sensitivity "
            f"{paper_tables.by_poison(wrong, 'ours: sensitivity')}, attack success after the defense "
            f"{paper_tables.by_poison(wrong, 'ASR after ours')}")
    if len(both):
        text += (f", against medians of {both['ours: sensitivity'].median():.1f} % and "
                 f"{both['ASR after ours'].median():.1f} % over the {len(both)} experiments where both were found")
    return text + "."
