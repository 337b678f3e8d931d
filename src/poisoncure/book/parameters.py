"""What each notebook parameter may be: type and valid range, checked before any work starts.

The meaning of a parameter is the comment beside it in the notebook's ``parameters`` cell (one source of truth,
read by :func:`comments`); its valid values are the :data:`RULES` here. ``python -m poisoncure.book build`` checks
every resolved value (profile and ``-p`` overrides) against these rules before executing anything, and the
book's parameters page lists both, with each chapter's measured CPU time.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A valid value: ``kind`` (int, float, str or bool) within [low, high] (ends open when flagged) or among
    ``choices``; ``optional`` admits None; ``many`` means a non-empty list of such values."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False
    many: bool = False
    pattern: str | None = None  #: a regular expression a string must match fully

    def _one(self, v: Any) -> bool:
        if self.kind is float:
            ok_type = isinstance(v, int | float) and not isinstance(v, bool)
        else:
            ok_type = isinstance(v, self.kind) and not (self.kind is int and isinstance(v, bool))
        if not ok_type:
            return False
        if self.choices is not None and v not in self.choices:
            return self.pattern is not None and re.fullmatch(self.pattern, v) is not None
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def valid(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.many:
            return isinstance(value, list | tuple) and len(value) > 0 and all(self._one(v) for v in value)
        return self._one(value)

    def describe(self) -> str:
        """Human-readable valid values, e.g. ``float in (0, 1]`` or ``one of 'flip', 'none'``."""
        if self.choices is not None:
            s = "one of " + ", ".join(repr(c) for c in self.choices)
            if self.pattern is not None:
                s += f" (or matching {self.pattern})"
        else:
            s = self.kind.__name__
            if self.low is not None and self.high is not None:
                left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
                s += f" in {left}{_num(self.low)}, {_num(self.high)}{right}"
            elif self.low is not None:
                s += f" {'>' if self.low_open else '≥'} {_num(self.low)}"
            elif self.high is not None:
                s += f" {'<' if self.high_open else '≤'} {_num(self.high)}"
        if self.many:
            s = "non-empty list, each " + s
        return ("None or " + s) if self.optional else s


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _int(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule(int, low, high, **kw)


def _float(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule(float, low, high, **kw)


def _choice(*choices: Any, **kw: Any) -> Rule:
    return Rule(type(choices[0]), choices=choices, **kw)


UNIT = _float(0, 1, low_open=True)  # a fraction in (0, 1]
POSITIVE = _float(0, low_open=True)
# choices mirror the library's constants (tests/test_parameters.py checks they agree)
MODELS = ("small_cnn", "small_cnn_whitened", "whitened_net", "resnet18", "vgg19")
AUGMENTATIONS = ("crop_flip", "flip", "none")
BLEND_SOURCES = ("noise", "skimage")
RETRAINABLE = ("spectral", "activation_clustering")
ADDITIVE_PATTERNS = ("chessboard", "sparse")
FASHION_ATTACKS = ("badnets", "blend", "mislabel", "frog", "stingray")  # hygiene.ATTACKS less "clean", "withheld"
POOL_MODELS = ("I", "II", "III", "IV", "V", "VI")

RULES: dict[str, Rule] = {
    # shared model recipe (experiments.Recipe)
    "profile": Rule(str),  # checked against the available profiles by the build
    "device": _choice("auto", "cpu", "cuda", pattern=r"cuda:\d+"),
    "seed": _int(0),
    "tta": Rule(bool),
    "pair": _int(1, 9),
    "poison_rate": UNIT,
    "opacity": UNIT,
    "blend_source": _choice(*BLEND_SOURCES),
    "train_per_class": _int(1, 5000, optional=True),
    "model": _choice(*MODELS),
    "width": _int(1),
    "epochs": _int(1),
    "batch_size": _int(1),
    "lr": POSITIVE,
    "augment": _choice(*AUGMENTATIONS),
    "label_smoothing": _float(0, 1, high_open=True),
    "poisons": Rule(str, choices=("blend", "pixel"), many=True),
    # chapter 1: the toy model
    "d": _int(2),
    "trigger_value": POSITIVE,
    "beta0": POSITIVE,
    "poison_fraction": _float(0, 1, low_open=True, high_open=True),
    "n_train": _int(100),
    "mlp_epochs": _int(1),
    # chapter 3: synthetic Theorem 4.1
    "synthetic_d": _int(2),
    "synthetic_n": _int(2),
    "synthetic_strengths": _float(0, low_open=True, many=True),
    "synthetic_ns": _int(2, many=True),
    # chapter 4: filtering
    "mc_d": _int(2),
    "mc_trials": _int(1),
    "mc_ns": _int(2, many=True),
    "mc_norm": POSITIVE,
    "mc_n": _int(2),
    "mc_norms": _float(0, low_open=True, many=True),
    "error_level": _float(0, 1, low_open=True, high_open=True),
    "class_sizes": _int(2, 5500, many=True),
    "size_seeds": _int(1),
    "opacities": _float(0, 1, low_open=True, many=True),
    # chapters 5-7: the paper's defense
    "threshold": POSITIVE,
    "eta": POSITIVE,
    "etas": _float(0, low_open=True, many=True),
    "finetune_lrs": _float(0, low_open=True, many=True),
    # chapter 7: baselines
    "eps": _float(0, 1, low_open=True, high_open=True),
    "ss_layer": Rule(str, optional=True),
    "ac_layer": Rule(str, optional=True),
    "clean_per_class": _int(1, 1000),
    "nc_steps": _int(1),
    "fp_max_drop": _float(0, 100),
    "min_asr": _float(0, 100),
    "retrain": Rule(str, choices=RETRAINABLE, many=True, optional=True),
    "compare_profile": Rule(str),  # a profile whose results/<profile>/compare the all-defenses comparison reads
    # chapter 8: the paper's tables from the committed results
    "results_profile": Rule(str),  # a profile with a reproduce section (plan() says so otherwise)
    "results_grid": _choice("main", "compare"),  # which grid's files hold the paper's 18 (chapter 8)
    "tolerance": _float(0, 100),
    "live_point": Rule(str, optional=True),  # a point of the results profile's sweep; "" or None: none
    # chapter 10: detection without the training set
    "additive_pattern": _choice(*ADDITIVE_PATTERNS),
    "additive_l2": _float(0, 50, low_open=True),
    "additive_rate": UNIT,
    "additive_train_per_class": _int(1, 5000, optional=True),
    "clean_sizes": _int(1, 5000, many=True, optional=True),
    "search_per_class": _int(2, 1000),
    "search_eta": POSITIVE,
    "search_bound": POSITIVE,
    "pi": UNIT,
    "theta": _float(0, 1, low_open=True, high_open=True),
    # chapter 12: PoisHygiene (Fashion-MNIST suspects, references, DETECT, MITIGATE)
    "fm_attacks": Rule(str, choices=FASHION_ATTACKS, many=True),
    "fm_target": _int(0, 9),
    "fm_poison_rate": _float(0, 1, low_open=True, high_open=True),
    "fm_opacity": UNIT,
    "fm_train_size": _int(100, 60000),
    "fm_epochs": _int(1),
    "fm_lr": POSITIVE,
    "ref_models": Rule(str, choices=POOL_MODELS, many=True),
    "ref_train_size": _int(10, 60000),
    "ref_goal": _float(0, 100, low_open=True),
    "cifar_ref_per_class": _int(1, 5000, many=True),
    "probes": _int(1),
    "hygiene_steps": _int(1),
    "warm_steps": _int(0),
    "calibration_steps": _int(1),
    "calibration_rounds": _int(1),
    "tau": _float(0, 1, high_open=True),
    "craft_steps": _int(1),
    "craft_lr": POSITIVE,
    "craft_restarts": _int(1),
    "clean_fraction": UNIT,
    "crafted_fraction": UNIT,
    # 12_weak_learners
    "wl_poison": _choice("blend", "pixel", "patch"),
    "wl_patch_size": _int(1, 32),
    "wl_train_per_class": _int(1, 5000, optional=True),
    "wl_epochs": _int(1),
    "wl_poison_rate": UNIT,
    "per_class": _int(10, 5000),
    "poisoned_share": UNIT,
    "own_epochs": _int(1, 200),
    "own_opacity": UNIT,
    "wl_components": _int(1),
    "wl_bags": _int(1),
    "wl_alpha": UNIT,
    "wl_eta": _float(0, 1),
    "wl_warmup_epochs": _int(1),
    "wl_iter_epochs": _int(1),
    "wl_learner_epochs": _int(1),
    "wl_min_active": _int(0),
    "wl_spl_rounds": _int(0),
    "wl_spl_epochs": _int(1),
    "wl_spl_momentum": _float(0, 1),
    "wl_lr": POSITIVE,
    "wl_batch_size": _int(1),
    "wl_augment": _choice(*AUGMENTATIONS),
    "wl_eval_augment": Rule(bool),
    "itlm_rounds": _int(1),
    "itlm_first_epochs": _int(1),
    "itlm_epochs": _int(1),
    "clean_reference": Rule(bool),
    "toy_draws": _int(1),
}


def check(notebook: str, values: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming every value of ``notebook`` outside its valid range (with the range)."""
    bad = []
    for name, value in values.items():
        rule = RULES.get(name)
        if rule is None:
            bad.append(f"{name}: no rule in poisoncure.book.parameters.RULES (add one)")
        elif not rule.valid(value):
            bad.append(f"{name}={value!r}: must be {rule.describe()}")
    if bad:
        raise ValueError(f"notebook {notebook!r}: invalid parameter value(s):\n  " + "\n  ".join(bad))


def comments(cell_source: str) -> dict[str, str]:
    """``{name: comment}`` for ``name = value  # comment`` lines of a parameters cell."""
    out: dict[str, str] = {}
    last_name = None
    for tok in tokenize.generate_tokens(io.StringIO(cell_source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 0:
            last_name = tok.string
        elif tok.type == tokenize.COMMENT and last_name is not None and tok.start[1] > 0:
            out[last_name] = tok.string.lstrip("#").strip()
        elif tok.type == tokenize.NEWLINE:
            last_name = None
    return out
