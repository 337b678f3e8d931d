"""Numbers reported in the paper (Chan & Ong 2019), for the labelled "paper" columns of the book only.

Transcribed from SPEC §5 (Tables 1-2 survived extraction verbatim). Never used as results of this project.
Each row: pair -> (acc before: all, acc before: poisoned, acc after: all, acc after: poisoned), in %.
"""

TABLE1_BLEND = {
    1: (95.0, 4.6, 94.3, 88.6), 2: (95.2, 11.3, 95.0, 97.6), 3: (95.5, 2.5, 94.5, 95.3),
    4: (95.0, 16.5, 94.4, 95.3), 5: (95.3, 1.2, 94.9, 94.6), 6: (95.4, 5.0, 94.6, 97.3),
    7: (95.0, 16.6, 94.9, 90.8), 8: (95.2, 12.5, 94.3, 87.8), 9: (95.0, 9.6, 94.5, 96.1),
}
TABLE2_PIXEL = {
    1: (95.4, 0.5, 94.9, 87.5), 2: (95.4, 0.4, 95.0, 95.9), 3: (95.3, 0.4, 95.2, 86.0),
    4: (95.2, 1.0, 95.0, 96.3), 5: (95.3, 0.5, 95.1, 96.4), 6: (95.3, 2.0, 95.3, 96.4),
    7: (95.3, 1.0, 94.6, 81.4), 8: (95.1, 1.4, 95.0, 90.6), 9: (95.4, 3.0, 95.2, 98.2),
}


def before(poison: str, pair: int) -> tuple[float, float]:
    """(clean accuracy, accuracy on triggered base images) of the paper's poisoned ResNet-18, in %."""
    table = {"blend": TABLE1_BLEND, "pixel": TABLE2_PIXEL}.get(poison)
    if table is None:
        raise ValueError(f"poison must be 'blend' or 'pixel', got {poison!r}")
    return table[pair][0], table[pair][1]
