"""Numbers the papers of the book report, for the labelled "paper" columns only; the one place they are typed.

Chan & Ong (2019), *Poison as a Cure*: Tables 1-5 (transcribed from SPEC §5; Tables 1-2 survived extraction
verbatim), each row of Tables 1-2: pair -> (acc before: all, acc before: poisoned, acc after: all, acc after:
poisoned), in %. At the end, the other papers the book compares with: the weak-learner ensembles paper's Table 1
(:data:`ENSEMBLES_TABLE1`), PoisHygiene's Tables 6 and 8 (:data:`HYGIENE_FMNIST`, :data:`HYGIENE_CIFAR`) and
BackdoorBench's leaderboard (:data:`BACKDOORBENCH`).
Never used as results of this project.
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


# ------------------------------------------------------------------------------- the other papers of the book
#: The ensembles paper's Table 1 (PreActResNet18, scenario 1, single-pixel triggers): (pair, ε %) -> {method: (C, A)}.
ENSEMBLES_TABLE1: dict[tuple[str, int], dict[str, tuple[float, float]]] = {
    ("2/5", 5): {"none": (94.5, 75.6), "SS": (94.3, 74.7), "AC": (92.4, 53.9), "ITLM": (94.7, 79.4),
                 "TW": (92.5, 0.1)},
    ("2/5", 10): {"none": (94.6, 95.2), "SS": (94.4, 0.0), "AC": (92.9, 81.8), "ITLM": (94.7, 92.4),
                  "TW": (93.0, 0.0)},
    ("2/5", 20): {"none": (94.7, 98.1), "SS": (94.2, 0.0), "AC": (92.6, 89.4), "ITLM": (94.6, 96.3),
                  "TW": (92.8, 0.0)},
    ("7/4", 5): {"none": (94.8, 99.3), "SS": (94.6, 50.0), "AC": (92.2, 39.2), "ITLM": (94.6, 57.2),
                 "TW": (92.0, 0.1)},
    ("7/4", 10): {"none": (94.5, 99.2), "SS": (94.2, 10.4), "AC": (92.0, 47.9), "ITLM": (94.5, 75.0),
                  "TW": (92.9, 0.3)},
    ("7/4", 20): {"none": (94.5, 98.8), "SS": (94.3, 1.5), "AC": (91.9, 60.5), "ITLM": (94.2, 92.3),
                  "TW": (92.3, 1.3)},
    ("8/6", 5): {"none": (94.7, 84.1), "SS": (94.8, 80.5), "AC": (92.8, 73.3), "ITLM": (94.4, 76.3),
                 "TW": (93.1, 0.0)},
    ("8/6", 10): {"none": (94.6, 96.4), "SS": (94.2, 96.0), "AC": (92.2, 97.0), "ITLM": (94.5, 94.2),
                  "TW": (93.0, 0.0)},
    ("8/6", 20): {"none": (94.1, 98.1), "SS": (94.3, 0.0), "AC": (92.5, 96.4), "ITLM": (94.1, 96.4),
                  "TW": (92.9, 0.0)},
    ("9/2", 5): {"none": (94.9, 98.0), "SS": (94.4, 65.7), "AC": (92.8, 79.7), "ITLM": (94.7, 97.6),
                 "TW": (93.0, 0.0)},
    ("9/2", 10): {"none": (94.9, 99.1), "SS": (94.6, 0.0), "AC": (92.6, 80.8), "ITLM": (94.4, 99.3),
                  "TW": (92.9, 0.0)},
    ("9/2", 20): {"none": (94.7, 99.1), "SS": (94.3, 0.0), "AC": (93.1, 98.9), "ITLM": (94.1, 99.1),
                  "TW": (93.1, 0.0)},
}

#: PoisHygiene's Fashion-MNIST numbers for each attack, for "paper" columns: Table 6 (``detect``: Prob of the infected
#: label, FP rate, with a model ensemble) and Table 8 (``acc`` and ``asr``, in %: before → after PoisHygiene, and
#: after clean-only fine-tuning in brackets). Short strings, so that tables show them whole.
HYGIENE_FMNIST = {
    "clean": {"detect": "FP 0 %"},
    "withheld": {"detect": "FP 0 %"},
    "badnets": {"detect": "89 % (FP 0 %)", "acc": "90.93 → 87.94 (88.61)", "asr": "100 → 0.93 (95.46)"},
    "blend": {"detect": "86 % (FP 0 %)", "acc": "90.49 → 88.01 (88.68)", "asr": "98.43 → 2.51 (13)"},
    "mislabel": {"detect": "86 % (FP 0 %)", "acc": "92.9 → 90.06 (91.47)", "asr": "98.1 → 1.06 (79.21)"},
    "frog": {"detect": "86 % (FP 0 %)", "acc": "91.23 → 89.72 (91.47)", "asr": "98.1 → 1.06 (79.18)"},
    "stingray": {"detect": "86 % (FP 0 %)", "acc": "92.83 → 90.09 (92.01)", "asr": "98.1 → 2.07 (80.61)"},
}

#: The same for the paper's CIFAR-10 all-to-one backdoors (ResNets and DenseNets, a four-model ensemble).
HYGIENE_CIFAR = {
    "clean": {"detect": "FP 10 %"},
    "badnets": {"detect": "100 % (FP 10 %)", "acc": "93.26 → 90.28 (89.44)", "asr": "97.14 → 5.12 (93.34)"},
    "chen": {"detect": "100 % (FP 10 %)", "acc": "90.39 → 88.41 (89.26)", "asr": "98.31 → 4.35 (13.2)"},
}

#: BackdoorBench's leaderboard (Wu et al., 2022; CIFAR-10, PreAct-ResNet18, 10 % of the training set poisoned):
#: (clean accuracy, attack success) in %, without a defense and after each of the four defenses it shares with the
#: book, under the book's defense names.
BACKDOORBENCH = {
    "BadNets": {"none": (91.32, 95.03), "Spectral Signatures": (89.98, 92.41),
                "Activation Clustering": (88.80, 86.23), "Neural Cleanse": (89.05, 1.27),
                "Fine-Pruning": (91.31, 57.13)},
    "Blended": {"none": (93.47, 99.92), "Spectral Signatures": (90.35, 99.84),
                "Activation Clustering": (88.52, 99.72), "Neural Cleanse": (93.47, 99.92),
                "Fine-Pruning": (93.17, 99.26)},
}
#: the compare grid's attack settings of the same kind as a BackdoorBench attack: setting -> (key of
#: :data:`BACKDOORBENCH`, how the reader's table names it). Same kind, not the same attack: BackdoorBench poisons 10 %
#: of the whole training set of a larger network; the book's blend poisons 10 % of one class.
BACKDOORBENCH_MATCH = {"badnets": ("BadNets", "BadNets"), "pair1-blend": ("Blended", "Blended")}
