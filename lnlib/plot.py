"""Static matplotlib figures. Every function returns a `Figure`; languages keep the paper's order and colours."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lnlib.data import LANGS

LANG_COLORS: dict[str, str] = dict(zip(LANGS, plt.get_cmap("tab10").colors, strict=True))
"""One colour per language, used by every figure of the book."""


def lang_bars(values: Mapping[str, float], ylabel: str, title: str = "", ax=None) -> Figure:
    """Bar chart of one value per language, in `LANGS` order (languages missing from `values` are skipped)."""
    langs = [lang for lang in LANGS if lang in values]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3))
    else:
        fig = ax.figure
    bars = ax.bar(langs, [values[lang] for lang in langs], color=[LANG_COLORS[lang] for lang in langs])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xlabel("language")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Identification (chapter "Finding language neurons")

GROUP_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")
"""Colours for series that are not languages (e.g. specific / related, this run / the paper)."""


def prob_histograms(probs, tau: float, langs=LANGS, bins: int = 100) -> Figure:
    """Left: histogram of the activation probabilities of every neuron, one line per language, with τ.
    Right: the share of neurons above τ per language. probs: [layers, neurons, languages]."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    flat = probs.reshape(-1, probs.shape[-1]).float()
    edges = [i / bins * max(1.0, float(flat.max())) for i in range(bins + 1)]
    for k, lang in enumerate(langs):
        left.hist(flat[:, k].numpy(), bins=edges, histtype="step", color=LANG_COLORS.get(lang), label=lang)
    left.axvline(tau, color="black", ls="--", lw=1)
    left.annotate(f"τ = {tau:.3f}", (tau, 0.97), xycoords=("data", "axes fraction"), xytext=(4, 0),
                  textcoords="offset points", va="top", fontsize=9)
    left.set_yscale("log")
    left.set_xlabel("activation probability p")
    left.set_ylabel("neurons per bin")
    left.legend(ncol=2, fontsize=8, title="language", title_fontsize=8)
    above = (flat > tau).double().mean(0) * 100
    lang_bars({lang: float(above[k]) for k, lang in enumerate(langs)}, "% of neurons with p > τ", ax=right)
    fig.tight_layout()
    return fig


def score_plane(entropy, top, tau: float, selections: Mapping, bins: int = 80) -> Figure:
    """Every neuron as (largest probability, normalised entropy), in grey (log scale), with the neurons of
    each selection on top (one panel per entry of `selections`: label -> flat neuron indices).
    Neurons left of τ are above τ in no language. entropy, top: [layers, neurons]."""
    from matplotlib.colors import LogNorm

    x, y = top.reshape(-1).float().numpy(), entropy.reshape(-1).float().numpy()
    fig, axes = plt.subplots(1, len(selections), figsize=(4.6 * len(selections) + 0.8, 3.8), squeeze=False,
                             sharey=True)
    for ax, (label, idx), color in zip(axes[0], selections.items(), GROUP_COLORS, strict=False):
        *_, image = ax.hist2d(x, y, bins=bins, range=[[0, max(1.0, x.max())], [0, 1]], cmap="Greys",
                              norm=LogNorm())
        ax.scatter(x[idx.numpy()], y[idx.numpy()], s=3, color=color, alpha=0.6, label=f"selected ({len(idx):,})")
        ax.axvline(tau, color="black", ls="--", lw=1)
        ax.annotate("τ", (tau, 0.5), xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                    fontsize=10, bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8})
        ax.set_title(label)
        ax.set_xlabel("largest activation probability max$_k$ p")
        ax.legend(loc="lower right", fontsize=8, markerscale=3)
    axes[0, 0].set_ylabel("normalised entropy Ĥ")
    fig.colorbar(image, ax=axes[0].tolist(), label="all neurons per bin")
    return fig


def sweep_trace(grid: Mapping[float, int], trace, lam_star: float, n_langs: int, zoom: float = 0.008) -> Figure:
    """AutoSweep: the number of selected neurons above τ in all K languages against λ (code units; paper units
    on the top axis). grid: λ -> that number on a grid (line); trace: the (λ, appear) pairs AutoSweep
    evaluated, numbered in order (green: criterion holds, red: fails). Right panel: zoom around λ*, where
    the steps inside it are numbered."""
    from matplotlib.lines import Line2D

    from lnlib.identify import lam_to_code, lam_to_paper

    lams = sorted(grid)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.5, 1]})
    for ax, window in zip(axes, (None, zoom), strict=True):
        keep = [lam for lam in lams if window is None or abs(lam - lam_star) <= window]
        ax.plot(keep, [grid[lam] for lam in keep], color="grey", lw=1, marker=".", ms=3, label="grid")
        for step, (lam, appear) in enumerate(trace, 1):
            inside = abs(lam - lam_star) <= zoom
            if window is not None and not inside:
                continue
            ax.plot(lam, appear[-1], "o", color="tab:green" if appear[-1] == 0 else "tab:red", ms=6)
            if window is not None or not inside:
                ax.annotate(str(step), (lam, appear[-1]), xytext=(4, 4), textcoords="offset points", fontsize=8)
        ax.axvline(lam_star, color="black", ls="--", lw=1)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(-0.3, 3 * max([grid[lam] for lam in keep] + [a[-1] for _, a in trace if window is None]))
        ax.set_xlabel("λ (code units)")
        ax.set_ylabel(f"selected neurons above τ in all {n_langs}")
        top = ax.secondary_xaxis("top", functions=(lambda v: lam_to_paper(v, n_langs),
                                                   lambda v: lam_to_code(v, n_langs)))
        top.set_xlabel("λ (paper units)")
    marks = [Line2D([], [], marker="o", ls="", color=c, label=t) for c, t in
             (("tab:green", "step: criterion holds"), ("tab:red", "step: criterion fails"))]
    axes[0].legend(handles=marks + [Line2D([], [], color="black", ls="--", label=f"λ* = {lam_star:.8g}")],
                   fontsize=8, loc="center right")
    axes[0].set_title("AutoSweep's bisection steps, numbered", fontsize=10)
    axes[1].set_title(f"zoom: λ* ± {zoom:g}", fontsize=10)
    fig.tight_layout()
    return fig


def grouped_bars(series: Mapping, categories, xlabel: str, ylabel: str, title: str = "", log: bool = False,
                 stacked: bool = False, label_bars: bool = True, figsize=(8, 3.6)) -> Figure:
    """Bars of several series (label -> one value per category), side by side or stacked, with value labels."""
    import numpy as np

    fig, ax = plt.subplots(figsize=figsize)
    pos = np.arange(len(categories))
    width = 0.8 if stacked else 0.8 / len(series)
    bottom = np.zeros(len(categories))
    for i, ((label, values), color) in enumerate(zip(series.items(), GROUP_COLORS, strict=False)):
        values = np.asarray(values, dtype=float)
        x = pos if stacked else pos - 0.4 + width * (i + 0.5)
        bars = ax.bar(x, values, width, bottom=bottom if stacked else None, color=color, label=label)
        if label_bars:
            ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=7,
                         label_type="center" if stacked else "edge", rotation=0 if stacked else 90, padding=2)
        if stacked:
            bottom += values
    if stacked and label_bars:
        for x, total in zip(pos, bottom, strict=True):
            ax.annotate(f"{total:,.0f}", (x, total), xytext=(0, 2), textcoords="offset points", ha="center",
                        fontsize=8, fontweight="bold")
    ax.set_xticks(pos, list(categories))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.margins(y=0.25 if log else 0.15)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lang_heatmap(values, title: str, cbar_label: str, langs=LANGS, center: float | None = None,
                 hide_diagonal: bool = False, fmt: str = "{:.0f}", xlabel: str = "language",
                 ylabel: str = "language") -> Figure:
    """Annotated heatmap of a [K, K] matrix with language codes on both axes (in `langs` order).
    center: use a diverging colour map centred on this value (for changes). hide_diagonal: leave the diagonal
    out of the colour scale (shown in grey, still annotated)."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    grid = np.asarray(values, dtype=float)
    shown = np.ma.masked_where(np.eye(len(langs), dtype=bool), grid) if hide_diagonal else grid
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    if center is None:
        cmap, norm = plt.get_cmap("viridis").copy(), None
    else:
        span = max(abs(shown.max() - center), abs(shown.min() - center)) or 1.0
        cmap, norm = plt.get_cmap("RdBu_r").copy(), TwoSlopeNorm(center, center - span, center + span)
    cmap.set_bad("lightgrey")
    image = ax.imshow(shown, cmap=cmap, norm=norm)
    lo, hi = float(shown.min()), float(shown.max())
    for (r, c), v in np.ndenumerate(grid):
        dark = center is None and not (hide_diagonal and r == c) and (v - lo) < 0.6 * (hi - lo)
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.85)
    fig.tight_layout()
    return fig
