"""Figure style and image helpers shared by the chapters — presentation only, no computation."""

from __future__ import annotations

import html
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

PALETTE = "colorblind"


def _reader_warning_types() -> tuple[type[Warning], ...]:
    from .cache import CacheWarning
    from .reproduce import ResultWarning

    return CacheWarning, ResultWarning


def note_html(kind: str, title: str, body: str) -> str:
    """A MyST-styled admonition (``kind`` 'note' or 'warning') as raw HTML for a cell's output; ``body`` is HTML."""
    return (f'<div class="admonition {kind}"><p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{body}</p></div>")


def show_reader_warnings() -> bool:
    """In a notebook kernel, show the warnings a reader must see — a cache entry rebuilt (:class:`CacheWarning`), a
    result file refused (:class:`ResultWarning`) — as a visible note in the cell's output. The pages drop stderr
    (``nb_output_stderr: remove``, for progress bars), where these warnings would otherwise vanish; they still go to
    stderr too, for the build log. Returns whether the hook was installed (False outside IPython)."""
    import warnings

    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return False
    if get_ipython() is None:
        return False
    original = getattr(warnings.showwarning, "_poisoncure_original", warnings.showwarning)
    kinds = _reader_warning_types()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        original(message, category, filename, lineno, file, line)
        if issubclass(category, kinds):
            display(HTML(note_html("warning", f"Note from the build ({category.__name__})", html.escape(str(message)))))

    showwarning._poisoncure_original = original
    warnings.showwarning = showwarning
    return True


def scale_note(profile: str) -> str | None:
    """The note a page shows when its build's profile is below the paper's scale (every profile but those marked
    ``paper_scale: true``, i.e. ``full``): HTML naming the profile and its description, or ``None``."""
    from . import profiles

    prof = profiles.load(profile)
    if prof.get("paper_scale"):
        return None
    return note_html("note", "Below the paper's scale",
                     f'This page was built with the <strong>{html.escape(profile)}</strong> profile: '
                     f'{html.escape(str(prof.get("description", "")).strip())} Its numbers show each effect at a '
                     "smaller scale than the paper's; they are not comparable with the paper's own.")


def set_style(profile: str | None = None) -> None:
    """The book's one figure style: seaborn 'whitegrid', colour-blind-safe palette, readable sizes; in a notebook
    kernel also :func:`show_reader_warnings` and, given the build's ``profile``, its :func:`scale_note`."""
    if show_reader_warnings() and profile is not None:
        note = scale_note(profile)
        if note is not None:
            from IPython.display import HTML, display

            display(HTML(note))
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titlesize": 11, "axes.labelsize": 10,
                      "figure.autolayout": False})


def colours(n: int) -> list:
    return sns.color_palette(PALETTE, n)


def to_display(img: np.ndarray) -> np.ndarray:
    """uint8 HWC images pass through; float CHW/HWC arrays are min-max scaled to [0, 1] for display."""
    if img.dtype == np.uint8:
        return img
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), size: float = 1.3, markers: dict | None = None):
    """A grid of images (uint8 HWC, or float maps scaled for display) with row and column labels.

    ``markers`` maps (row, col) to (y, x) positions to circle, e.g. a one-pixel trigger.
    """
    n_r, n_c = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_r, n_c, figsize=(size * n_c, size * n_r), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_c):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j < len(row):
                ax.imshow(to_display(row[j]), interpolation="nearest")
                if markers and (i, j) in markers:
                    y, x = markers[(i, j)]
                    ax.add_patch(plt.Circle((x, y), 2.2, fill=False, color="red", lw=1.2))
            else:
                ax.axis("off")
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=9)
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=9)
    fig.tight_layout()
    return fig


def placeholder(text: str, width: float = 4.0):
    """A small empty figure that says ``text``: what a chapter shows where a figure has nothing to draw yet."""
    fig, ax = plt.subplots(figsize=(width, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig
