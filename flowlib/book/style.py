"""One figure style for the whole book, sized for the page it is read on.

The book's HTML column is about 730 CSS pixels wide. Matplotlib's inline backend saves figures
at ``figure.dpi`` (here 100) pixels per inch, so a figure at most ``MAX_WIDTH`` = 7 inches wide is
shown at its natural size, and a 10-point font is about 14 px on the page. A wider figure is
scaled down with its text: split a gallery into rows or several figures instead of widening it.
"""

from __future__ import annotations

__all__ = ["MAX_WIDTH", "STYLE", "use_book_style", "figsize"]

MAX_WIDTH = 7.0  # inches: 700 px at 100 dpi, inside the ~730 px column
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": (6.4, 4.0),
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.constrained_layout.use": True,
}


def figsize(width: float = 6.4, aspect: float = 0.625) -> tuple[float, float]:
    """``(width, width * aspect)`` in inches, refusing widths the column would shrink."""
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"a figure is at most {MAX_WIDTH} inches wide (the column), got {width}")
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    return (width, width * aspect)


def use_book_style() -> None:
    """Apply :data:`STYLE` to matplotlib (imported here, so flowlib needs it only for figures)."""
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)
