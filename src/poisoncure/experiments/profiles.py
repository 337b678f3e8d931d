"""Named parameter sets for the notebooks (``profiles/<name>.yml``).

A profile has an ``experiment`` section — the shared model recipe, given to every notebook that declares
those names — and a ``notebooks`` section with per-chapter values. :func:`notebook_parameters` resolves the
values for one notebook and rejects names the notebook does not declare, before any work starts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(str(resources.files("poisoncure.experiments") / "profiles"))


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yml"))


def load(name: str) -> dict[str, Any]:
    """The profile ``name`` as a dict with keys ``description``, ``experiment`` and ``notebooks``."""
    path = PROFILE_DIR / f"{name}.yml"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; available: {available()}")
    prof = yaml.safe_load(path.read_text()) or {}
    for key in ("experiment", "notebooks"):
        if not isinstance(prof.get(key), dict):
            raise ValueError(f"profile {name!r} needs a mapping {key!r}")
    prof["name"] = name
    return prof


def notebook_parameters(profile: str, notebook: str, declared: dict[str, Any],
                        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Values to inject into ``notebook``: the profile's experiment values for the names the notebook declares,
    its per-notebook values, then ``overrides``. ``declared`` maps the notebook's parameter names to their
    defaults. Unknown names raise ``ValueError`` listing the valid ones."""
    prof = load(profile)
    params: dict[str, Any] = {"profile": profile} if "profile" in declared else {}
    params.update({k: v for k, v in prof["experiment"].items() if k in declared})
    specific = prof["notebooks"].get(notebook, {}) or {}
    for source, values in (("profile " + profile, specific), ("overrides", overrides or {})):
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise ValueError(f"{source}: notebook {notebook!r} has no parameter(s) {unknown}; "
                             f"its parameters are {sorted(declared)}")
        params.update(values)
    return params
