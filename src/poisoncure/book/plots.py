"""Figure style and image helpers shared by the chapters — presentation only, no computation."""

from __future__ import annotations

import contextlib
import html
import itertools
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

PALETTE = "colorblind"
#: resolution of the book's figures (pixels per inch of the PNG a page shows)
FIGURE_DPI = 110
#: the text column of a page at a 1280-px window (pixels): figures are drawn for it
COLUMN_PX = 672
#: the widest a figure is drawn (inches): the column at :data:`FIGURE_DPI`, so that the page shows it at its natural
#: size and its text at the size it was drawn (the saved image is the tight box, labels and legends included)
MAX_FIGURE_WIDTH = COLUMN_PX / FIGURE_DPI
#: the body text's size on a page (pixels; the theme's 1 rem, measured in the built book)
BODY_PX = 16
#: the smallest size (points) of a figure's tick labels, axis labels, titles and legends: at :data:`FIGURE_DPI`
#: and natural size they show at least as large as the body text
MIN_TEXT_PT = BODY_PX * 72 / FIGURE_DPI


#: shorter names of the CIFAR-10 classes, for labels over narrow columns of images (the others are short already)
SHORT_NAMES = {"airplane": "plane", "automobile": "car"}


def short(name: str) -> str:
    """A class name short enough to label a narrow column of images ("automobile" -> "car")."""
    return SHORT_NAMES.get(name, name)


def _reader_warning_types() -> tuple[type[Warning], ...]:
    from ..cache import CacheWarning
    from ..experiments.result_files import ResultWarning

    return CacheWarning, ResultWarning


def note_html(kind: str, title: str, body: str) -> str:
    """A MyST-styled admonition (``kind`` 'note' or 'warning') as raw HTML for a cell's output; ``body`` is HTML."""
    return (f'<div class="admonition {kind}"><p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{body}</p></div>")


def _kernel() -> Any:
    """The IPython shell this code runs in, or None (no IPython, or not inside a kernel)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def show_reader_warnings() -> bool:
    """In a notebook kernel, show the warnings a reader must see — a cache entry rebuilt (:class:`CacheWarning`), a
    result file refused (:class:`ResultWarning`) — as a visible note in the cell's output. The pages drop stderr
    (``nb_output_stderr: remove``, for progress bars), where these warnings would otherwise vanish; they still go to
    stderr too, for the build log. Returns whether the hook was installed (False outside IPython)."""
    import warnings

    if _kernel() is None:
        return False
    from IPython.display import HTML, display

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
    from ..experiments import profiles

    prof = profiles.load(profile)
    if prof.get("paper_scale"):
        return None
    return note_html("note", "Below the paper's scale",
                     f'This page was built with the <strong>{html.escape(profile)}</strong> profile: '
                     f'{html.escape(str(prof.get("description", "")).strip())} Its numbers show each effect at a '
                     "smaller scale than the paper's; they are not comparable with the paper's own.")


def set_style(profile: str | None = None) -> None:
    """The book's one figure style: seaborn 'whitegrid', colour-blind-safe palette, readable sizes, figures drawn for
    the text column (:func:`fit_figures_to_column`), tables shown whole (no cell or row cut by pandas) and in the
    book's cell conventions (:func:`tables_for_reading`); in a notebook
    kernel also :func:`show_reader_warnings` and, given the build's ``profile``, its :func:`scale_note`."""
    if show_reader_warnings() and profile is not None:
        note = scale_note(profile)
        if note is not None:
            from IPython.display import HTML, display

            display(HTML(note))
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI, "axes.titlesize": 11, "axes.labelsize": 10,
                      "figure.autolayout": False})
    fit_figures_to_column()
    tables_for_reading()
    # tables show every cell whole: no "..." inside a cell, no rows or columns left out
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.max_columns", None)


def fit_to_column(fig, max_width: float = MAX_FIGURE_WIDTH, relayout_first: bool = False) -> bool:
    """Narrow a figure whose saved image (its tight box: the figure and any label or legend outside it) is wider than
    ``max_width`` inches, so that the page shows it near its natural size and its text stays readable (a wider image
    would be scaled down as a picture, text and all). The height shrinks by the square root of the width's factor
    (the panels get taller, which leaves room for their labels) and the layout is redone; ``relayout_first`` redoes
    it even when the width fits (after texts changed size). Returns whether the figure was changed."""
    import warnings

    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    def relayout():  # a figure laid out once by tight_layout() keeps a placeholder engine; a live engine re-lays itself
        if fig.get_layout_engine() is None or isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tight_layout's "not compatible" note for figures it cannot lay out
                fig.tight_layout()

    changed = reflow_row(fig, max_width)
    if changed or relayout_first:
        relayout()
    for _ in range(3):  # the saved image is the tight box: labels or a legend outside the axes make it wider
        w, h = fig.get_size_inches()
        drawn = max(w, fig.get_tightbbox().width)
        if drawn <= max_width * 1.01:
            break
        factor = max_width / drawn
        fig.set_size_inches(w * factor, h * factor ** 0.5)
        relayout()
        changed = True
    return changed


def reading_texts(fig) -> list:
    """The texts a reader reads off a figure to understand it: tick labels, axis labels and titles of every axes
    (colour bars included), legend entries and titles, the figure's suptitle and legends. Text placed inside the
    data (annotations, a heat map's numbers) is not among them: its size is the figure's own choice."""
    out = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            out += [*axis.get_ticklabels(which="both"), axis.label]
        out += [ax.title, ax._left_title, ax._right_title]
    legends = [ax.get_legend() for ax in fig.axes] + list(fig.legends)
    for leg in legends:
        if leg is not None:
            out += [*leg.get_texts(), leg.get_title()]
    if fig._suptitle is not None:
        out.append(fig._suptitle)
    return [t for t in out if t.get_text()]


def enlarge_small_text(fig, min_pt: float = MIN_TEXT_PT) -> bool:
    """Raise every text of :func:`reading_texts` smaller than ``min_pt`` points to ``min_pt`` (tick labels through
    ``tick_params``, so that ticks drawn later follow). Returns whether anything changed."""
    changed = False
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if any(t.get_fontsize() < min_pt for t in axis.get_ticklabels(which="both")):
                ax.tick_params(axis=name, which="both", labelsize=min_pt)
                changed = True
    for t in reading_texts(fig):
        if t.get_fontsize() < min_pt:
            t.set_fontsize(min_pt)
            changed = True
    return changed


def _labelled_texts(fig) -> list[tuple[str, Any]]:
    """Every visible, non-empty text of a figure with a name saying where it is (for :func:`text_collisions`)."""
    out = []
    for i, ax in enumerate(fig.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            lo, hi = sorted(axis.get_view_interval())
            k = 0 if name == "x" else 1  # a tick label outside the axes' limits is not drawn
            out += [(f"axes {i} {name} tick {t.get_text()!r}", t) for t in axis.get_ticklabels()
                    if lo - 1e-9 * abs(hi - lo) <= t.get_position()[k] <= hi + 1e-9 * abs(hi - lo)]
            out.append((f"axes {i} {name} label", axis.label))
        out += [(f"axes {i} title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        out += [(f"axes {i} text {t.get_text()!r}", t) for t in ax.texts]
        leg = ax.get_legend()
        if leg is not None:
            out += [(f"axes {i} legend {t.get_text()!r}", t) for t in leg.get_texts()]
    for leg in fig.legends:
        out += [(f"figure legend {t.get_text()!r}", t) for t in leg.get_texts()]
    if fig._suptitle is not None:
        out.append(("suptitle", fig._suptitle))
    out += [(f"figure text {t.get_text()!r}", t) for t in fig.texts]
    return [(n, t) for n, t in out if t.get_visible() and t.get_text().strip()]


def text_collisions(fig, min_share: float = 0.15) -> list[str]:
    """Pairs of a figure's texts that overlap when drawn (by more than ``min_share`` of the smaller one's area):
    tick labels running into each other, a title into its neighbour's, an annotation over a label. A list of
    "<text> overlaps <text>"; empty for a figure whose every text can be read."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes, seen = [], set()
    for name, t in _labelled_texts(fig):  # an artist listed twice (the suptitle is also a figure text) counts once
        bb = t.get_window_extent(renderer)
        if bb.width > 0 and bb.height > 0 and id(t) not in seen:
            seen.add(id(t))
            boxes.append((name, bb, t))
    found = []
    for i, (na, a, ta) in enumerate(boxes):
        for nb, b, tb in boxes[i + 1:]:
            w = min(a.x1, b.x1) - max(a.x0, b.x0)
            h = min(a.y1, b.y1) - max(a.y0, b.y0)
            # the same text drawn twice in one place (twin axes sharing their ticks) reads as one
            same = ta.get_text() == tb.get_text() and w * h > 0.9 * a.width * a.height
            if w > 0 and h > 0 and w * h > min_share * min(a.width * a.height, b.width * b.height) and not same:
                found.append(f"{na} overlaps {nb}")
    return found


def untangle_text(fig) -> bool:
    """The fixes that need no judgement, applied where texts collide: x tick labels that run into each other are
    turned 45° (then 90°) and anchored at their tick; a title wider than its axes is wrapped onto two lines.
    Returns whether anything changed."""
    import textwrap

    changed = False
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.xaxis.get_ticklabels() if t.get_visible() and t.get_text().strip()]
        for angle in (45, 90):
            boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
            if not any(a.x1 > b.x0 + 1 and min(a.y1, b.y1) > max(a.y0, b.y0) for a, b in itertools.pairwise(boxes)):
                break
            if all(abs(t.get_rotation()) >= angle for t in labels):
                continue
            for t in labels:
                t.set_rotation(angle)
                t.set_horizontalalignment("right" if angle < 90 else "center")
                t.set_rotation_mode("anchor" if angle < 90 else "default")
            changed = True
            fig.canvas.draw()
        title = ax.title
        text = title.get_text()
        width = ax.get_window_extent(renderer).width
        tw = title.get_window_extent(renderer).width
        if text and "\n" not in text and tw > 1.05 * width and len(text) > 20:
            title.set_text(textwrap.fill(text, max(12, int(len(text) * width / tw))))
            changed = True
    return changed


def label_panels(axes) -> list[str]:
    """Letter the panels of a figure — (a), (b), … in the order given (a grid of axes row by row) — at the start of
    each panel's title (the letter alone where there is none), and return the letters. Call it once the titles are
    set. Captions name panels by these letters, never by position: :func:`reflow_row` turns a row of panels that
    is too wide for the column into a grid, after which "left" and "right" no longer say where a panel is. (In the
    title rather than beside it: a second text at the title's height collides with a title as wide as its panel.)"""
    axes = list(np.ravel(axes))
    if len(axes) > 26:
        raise ValueError(f"at most 26 panels can be lettered, got {len(axes)}")
    letters = [f"({chr(ord('a') + k)})" for k in range(len(axes))]
    for letter, ax in zip(letters, axes, strict=True):
        title = ax.get_title()
        ax.set_title(f"{letter} {title}" if title else letter)
    return letters


def reflow_row(fig, max_width: float = MAX_FIGURE_WIDTH, min_share: float = 0.75) -> bool:
    """Rearrange a figure that is one row of N panels (one grid of 1 x N subplots and no other axes, such as
    colour bars) into a grid of several rows when it is wider than ``max_width``, so that each panel keeps at least
    ``min_share`` of its width instead of all N being squeezed into the column; a row keeps about its panels' aspect
    ratio, and is never taller than the figure was. Returns whether the figure was rearranged."""
    from matplotlib.gridspec import GridSpec

    w, h = fig.get_size_inches()
    specs = [ax.get_subplotspec() for ax in fig.axes]
    if w <= max_width or len(specs) < 2 or any(sp is None for sp in specs):
        return False
    grid = specs[0].get_gridspec()
    if grid.nrows != 1 or grid.ncols != len(specs) or any(sp.get_gridspec() is not grid for sp in specs) or \
            sorted(sp.colspan.start for sp in specs) != list(range(len(specs))):
        return False
    n = len(specs)
    cols = max(1, min(n - 1, int(max_width // (min_share * w / n))))
    rows = -(-n // cols)
    panel_w = max_width / cols
    panel_h = min(max(h * panel_w / (w / n), 0.8 * h), h)  # about the panel's aspect, never taller than before
    fig.set_size_inches(max_width, rows * panel_h)
    new = GridSpec(rows, cols, figure=fig)
    for ax, sp in zip(fig.axes, specs, strict=True):
        k = sp.colspan.start
        ax.set_subplotspec(new[k // cols, k % cols])
    return True


def tables_for_reading() -> bool:
    """In a notebook kernel, show every DataFrame's HTML through :func:`poisoncure.book.formatting.for_reading`
    (✓ / ✗ for a yes-or-no cell, a dash where nothing was measured), whichever code built the table: ``glue`` and
    inline display both use this formatter. Returns whether it was installed (False outside IPython)."""
    ip = _kernel()
    if ip is None:
        return False
    from .formatting import for_reading

    ip.display_formatter.formatters["text/html"].for_type(pd.DataFrame, lambda df: for_reading(df)._repr_html_())
    return True


def fit_figures_to_column() -> bool:
    """In a notebook kernel, show every matplotlib figure through :func:`fit_to_column` (the PNG formatter that
    ``glue`` and inline display use). Returns whether the formatter was installed (False outside IPython)."""
    ip = _kernel()
    if ip is None:
        return False
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    # the inline backend registers its own PNG formatter when it is first imported (lazily, at the first figure);
    # import it now so that ours, registered after it, is the one used
    with contextlib.suppress(ImportError):
        import matplotlib_inline.backend_inline  # noqa: F401

    def png(fig):
        fit_to_column(fig)
        if enlarge_small_text(fig):
            fit_to_column(fig, relayout_first=True)
        if untangle_text(fig):
            fit_to_column(fig, relayout_first=True)
        for problem in text_collisions(fig):  # left for the figure's own code to fix: listed in the build log
            print(f"figure text collision: {problem}", file=sys.stderr)
        return print_figure(fig, fmt="png", bbox_inches="tight", base64=True, dpi=FIGURE_DPI)

    ip.display_formatter.formatters["image/png"].for_type(Figure, png)
    return True


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
    size = min(size, MAX_FIGURE_WIDTH / (n_c + 0.6 * bool(row_labels)))  # many columns: smaller images, same column
    label_size = 9 if size >= 1.0 else 7
    lines = max((str(c).count("\n") + 1 for c in col_labels), default=0)  # room above the images for the labels
    fig, axes = plt.subplots(n_r, n_c, figsize=(size * n_c, size * n_r + lines * label_size / 60 + 0.1),
                             squeeze=False)
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
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=label_size)
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=label_size)
    fig.tight_layout()
    return fig


def placeholder(text: str, width: float = 4.0):
    """A small empty figure that says ``text``: what a chapter shows where a figure has nothing to draw yet."""
    fig, ax = plt.subplots(figsize=(width, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig
