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


#: Tables 3-4 (poisoned-sample detection in the target class): pair -> (specificity, sensitivity) in %, for the
#: paper's method ("Ours") and Activation Clustering. The first number's meaning is inferred (SPEC §5).
TABLE3_BLEND_DETECTION = {
    "ours": {1: (99.4, 94.6), 2: (99.6, 96.0), 3: (99.2, 95.6), 4: (99.7, 89.8), 5: (97.5, 87.4), 6: (99.5, 95.4),
             7: (98.9, 95.8), 8: (99.7, 89.2), 9: (99.6, 93.6)},
    "ac": {1: (70.7, 46.6), 2: (73.4, 96.2), 3: (99.8, 93.4), 4: (50.6, 13.0), 5: (72.4, 70.8), 6: (68.4, 79.8),
           7: (59.2, 6.4), 8: (50.0, 45.2), 9: (99.8, 94.2)},
}
TABLE4_PIXEL_DETECTION = {
    "ours": {1: (99.6, 92.8), 2: (99.5, 88.6), 3: (99.7, 99.0), 4: (96.8, 84.4), 5: (99.9, 99.0), 6: (99.7, 100.0),
             7: (99.1, 95.8), 8: (99.3, 94.0), 9: (99.52, 99.8)},
    "ac": {1: (71.7, 80.0), 2: (65.3, 92.0), 3: (99.4, 97.4), 4: (53.4, 25.4), 5: (85.8, 92.4), 6: (59.7, 44.6),
           7: (72.3, 97.2), 8: (64.9, 59.0), 9: (99.7, 91.0)},
}


def detection(poison: str, pair: int, method: str = "ours") -> tuple[float, float]:
    """(specificity, sensitivity) of poisoned-sample detection reported in Tables 3 (blend) / 4 (pixel), in %."""
    table = {"blend": TABLE3_BLEND_DETECTION, "pixel": TABLE4_PIXEL_DETECTION}.get(poison)
    if table is None or method not in table:
        raise ValueError(f"poison must be 'blend' or 'pixel' and method 'ours' or 'ac', got {poison!r}, {method!r}")
    return table[method][pair]


def after(poison: str, pair: int) -> tuple[float, float]:
    """(clean accuracy, accuracy on triggered base images) after the paper's neutralization, in % (Tables 1-2)."""
    table = {"blend": TABLE1_BLEND, "pixel": TABLE2_PIXEL}.get(poison)
    if table is None:
        raise ValueError(f"poison must be 'blend' or 'pixel', got {poison!r}")
    return table[pair][2], table[pair][3]


#: Table 5 (final neutralisation): pair -> attack success rate (%) after the paper's method ("ours") and after
#: Spectral Signatures ("ss"); the poison type is not stated in the paper (SPEC §5).
TABLE5_ASR = {
    "ours": {1: 6.0, 2: 0.0, 3: 3.7, 4: 0.4, 5: 0.4, 6: 0.1, 7: 6.1, 8: 5.4, 9: 0.0},
    "ss": {1: 7.2, 2: 0.1, 3: 0.1, 4: 1.1, 5: 1.7, 6: 0.4, 7: 0.7, 8: 6.7, 9: 0.0},
}


def final_asr(pair: int, method: str) -> float:
    """Attack success rate (%) after the defense, Table 5 ('ours' or 'ss')."""
    if method not in TABLE5_ASR:
        raise ValueError(f"method must be 'ours' or 'ss', got {method!r}")
    return TABLE5_ASR[method][pair]


#: §6.1-6.2 (SPEC 3(e)-(f)): over its 18 experiments (9 pairs x blend / one pixel, ResNet-18, 10 % of the base class
#: poisoned) the paper reports the target class's Wasserstein distance the largest, and the base class found, in all
EXPERIMENTS = 18
TARGETS_FOUND = 18
BASES_FOUND = 18
