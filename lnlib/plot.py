"""Static matplotlib figures. Every function returns a `Figure`; languages keep the paper's order and colours."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lnlib.data import LANGS
from lnlib.stats import Estimate

LANG_COLORS: dict[str, str] = dict(zip(LANGS, plt.get_cmap("tab10").colors, strict=True))
"""One colour per language, used by every figure of the book."""


def lang_color(lang: str):
    """The paper's languages keep their colours; any other language gets a stable grey-blue shade."""
    if lang in LANG_COLORS:
        return LANG_COLORS[lang]
    shade = 0.35 + (sum(map(ord, lang)) % 7) * 0.07
    return (shade, shade, min(1.0, shade + 0.2))


def lang_bars(values: Mapping[str, float], ylabel: str, title: str = "", ax=None,
              errors: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Bar chart of one value per language, in `LANGS` order (languages missing from `values` are skipped);
    errors: an interval (lo, hi) per language, drawn as error bars. values may be `lnlib.stats.Estimate`s: their
    intervals are the error bars (unless `errors` is given)."""
    if values and all(isinstance(v, Estimate) for v in values.values()):
        errors = {lang: (e.lo, e.hi) for lang, e in values.items()} if errors is None else errors
        values = {lang: e.value for lang, e in values.items()}
    langs = [lang for lang in LANGS if lang in values] + [lang for lang in values if lang not in LANGS]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3))
    else:
        fig = ax.figure
    yerr = None
    if errors is not None:
        yerr = [[values[lang] - errors[lang][0] for lang in langs], [errors[lang][1] - values[lang] for lang in langs]]
    bars = ax.bar(langs, [values[lang] for lang in langs], color=[lang_color(lang) for lang in langs], yerr=yerr,
                  capsize=3 if errors is not None else 0)
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
    """Bars of several series (label -> one value per category), side by side or stacked, with value labels. A value
    may be an `lnlib.stats.Estimate`: its point value is drawn."""
    import numpy as np

    fig, ax = plt.subplots(figsize=figsize)
    pos = np.arange(len(categories))
    width = 0.8 if stacked else 0.8 / len(series)
    bottom = np.zeros(len(categories))
    for i, ((label, values), color) in enumerate(zip(series.items(), GROUP_COLORS, strict=False)):
        if isinstance(values, Mapping):  # one value per category, by name
            values = [values[c] for c in categories]
        values = np.asarray([v.value if isinstance(v, Estimate) else v for v in values], dtype=float)
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


def neuron_bars(series: Mapping, title: str = "", stacked: bool = False, langs=LANGS) -> Figure:
    """Language neurons per language: `grouped_bars` of several series (label -> one count per language, in `langs`
    order), side by side or stacked (e.g. specific and related, from `Identification.lang_counts`)."""
    return grouped_bars(series, langs, "language", "selected neurons above τ in the language", title, stacked=stacked)


def n_bars(series: Mapping, ylabel: str = "neurons", title: str = "", log: bool = False) -> Figure:
    """Neurons above τ in exactly N = 1…K languages: `grouped_bars` of several series (label -> K counts, e.g.
    `Identification.n_histogram()[1:]`, `appear[1:]` or the paper's Fig. 15)."""
    k = len(next(iter(series.values())))
    return grouped_bars(series, [str(n) for n in range(1, k + 1)], "N = number of languages above τ", ylabel, title,
                        log=log)


def lang_heatmap(values, title: str, cbar_label: str, langs=LANGS, center: float | None = None,
                 hide_diagonal: bool = False, fmt: str = "{:.0f}", xlabel: str = "language",
                 ylabel: str = "language", rows=None) -> Figure:
    """Annotated heatmap of a [K, K] matrix with language codes on both axes (in `langs` order), or of an
    [R, K] matrix with `rows` (R labels) on the vertical axis.
    center: use a diverging colour map centred on this value (for changes). hide_diagonal: leave the diagonal
    out of the colour scale (shown in grey, still annotated)."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    grid = np.asarray(values, dtype=float)
    rows = list(langs if rows is None else rows)
    if grid.shape != (len(rows), len(langs)):
        raise ValueError(f"values have shape {grid.shape}; expected {(len(rows), len(langs))} (rows x langs)")
    shown = np.ma.masked_where(np.eye(len(langs), dtype=bool), grid) if hide_diagonal else grid
    fig, ax = plt.subplots(figsize=(6.2, 5.2) if len(rows) == len(langs) else (7.0, 1.6 + 0.5 * len(rows)))
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
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.85)
    fig.tight_layout()
    return fig


def accuracy_change(values, title: str) -> Figure:
    """Accuracy change under deactivation as the paper's Fig. 2 shows it: a [K, K] matrix (rows: the language
    whose neurons are switched off, columns: the evaluated language), two decimals, a diverging map centred on 0."""
    return lang_heatmap(values, title, "accuracy change", center=0, fmt="{:.2f}", xlabel="evaluated language",
                        ylabel="neurons switched off")


# ----------------------------------------------------------------------------------------------
# Four stages and the logit lens (chapter "Four stages")

STAGE_COLORS = ("#f2e6d9", "#e3edf7", "#e6f2e3", "#efe3f2")
"""Background shades of the four stages (1 to 4)."""

TYPE_COLORS = {"specific": "#4c72b0", "related": "#dd8452", "general": "#55a868"}
"""One colour per neuron type."""


def _shade_stages(ax, labels, text: bool = True) -> None:
    """Shade runs of equal stage label (0 = none) behind a per-layer plot and number them at the top."""
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            stage = labels[start]
            if stage:
                ax.axvspan(start - 0.5, i - 0.5, color=STAGE_COLORS[stage - 1], zorder=0)
                if text:
                    ax.annotate(str(stage), ((start + i - 1) / 2, 1), xycoords=("data", "axes fraction"),
                                xytext=(0, -2), textcoords="offset points", ha="center", va="top",
                                fontsize=9, fontweight="bold", color="0.35")
            if 0 < start and stage:
                ax.axvline(start - 0.5, color="0.4", ls="--", lw=0.8, zorder=1)
            start = i


def stage_profiles(results: Mapping) -> Figure:
    """One column per model (name -> `lnlib.stages.Stages`): top, the layer-wise counts of specific, related
    and general neurons; bottom, the language share the rule reads, with its low and high cut-offs. The
    stages are shaded and numbered (1–4); unshaded layers were not assigned."""
    import numpy as np

    fig, axes = plt.subplots(2, len(results), figsize=(5.4 * len(results), 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1]}, sharex="col")
    for col, (name, st) in enumerate(results.items()):
        top, bottom = axes[0, col], axes[1, col]
        layers = np.arange(st.layers)
        for kind in ("specific", "related", "general"):
            top.plot(layers, getattr(st, kind), marker="o", ms=3, lw=1.4, color=TYPE_COLORS[kind], label=kind)
        bottom.plot(layers, st.share, marker="o", ms=3, lw=1.4, color="black", label="language share")
        for key, style in (("low share", ":"), ("high share", "--")):
            bottom.axhline(st.thresholds[key], color="0.3", ls=style, lw=1,
                           label=f"{key.split()[0]} cut ({st.thresholds[key.split()[0]]:g} × peak)")
        for ax in (top, bottom):
            _shade_stages(ax, st.labels, text=ax is top)
            ax.set_xlim(-0.5, st.layers - 0.5)
        verdict = "four stages" if st.found else "four stages not found"
        top.set_title(f"{name}: {verdict}", fontsize=10)
        top.set_ylabel("neurons in the layer")
        bottom.set_ylabel("(spec. + rel.) / all")
        bottom.set_xlabel("layer")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_ylim(0, 1.05 * max(1e-9, max(st.share)))
        if col == 0:
            top.legend(fontsize=8, loc="best")
            bottom.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


LENS_COLORS = {"input language": "#4c72b0", "en": "#c44e52", "other languages": "#8172b3", "unattributed": "#cccccc"}


def lens_bands(bands, categories, groups, labels=None, title: str = "") -> Figure:
    """What the logit lens decodes to, per layer: one panel per group of texts, one line per category (input
    language, English, other languages, unattributed) with its bootstrap band. bands: (group, category, layer) ->
    `lnlib.stats.Estimate`; labels: per-layer stage labels, drawn as dashed boundaries."""
    import numpy as np

    layers = sorted({layer for _, _, layer in bands})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.8 * len(groups) + 0.6, 3.4), squeeze=False, sharey=True)
    colors = dict(zip(categories, LENS_COLORS.values(), strict=True))
    for ax, name in zip(axes[0], groups, strict=True):
        for category in categories:
            est = [bands[(name, category, layer)] for layer in layers]
            label = "English" if category == "pivot" else category
            ax.plot(layers, [e.value for e in est], color=colors[category], lw=1.6, label=label)
            ax.fill_between(layers, [e.lo for e in est], [e.hi for e in est], color=colors[category], alpha=0.25)
        if labels is not None:
            for i in np.nonzero(np.diff(labels))[0]:
                ax.axvline(i + 0.5, color="black", ls="--", lw=0.8)
        ax.set_xlim(layers[0], layers[-1])
        ax.set_ylim(0, 1)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"questions: {name}", fontsize=10)
    axes[0, 0].set_ylabel("share of decoded positions")
    axes[0, -1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig

def n_shares(series: Mapping) -> Figure:
    """The shape of the paper's Fig. 15 for models of any size: per series (label -> % of all neurons above τ in
    exactly N = 1…K languages, e.g. `Identification.n_percent()`), a bar for every N, on a log scale."""
    k = len(next(iter(series.values())))
    return grouped_bars(series, [str(n) for n in range(1, k + 1)], "N = languages above τ", "% of all neurons",
                        log=True, title="neurons above τ in exactly N languages", label_bars=False)


def nearly_general(tables: Mapping) -> Figure:
    """Per language, the % of the neurons above τ in exactly K − 1 languages that miss it: one series per model
    (label -> its `lnlib.stages.sharing_table`)."""
    first = next(iter(tables.values()))
    k = len(first)
    column = "% of N = 9 neurons missing it"
    return grouped_bars({label: table[column] for label, table in tables.items()}, list(first.index), "language",
                        f"% of neurons above τ in {k - 1} of {k} languages",
                        title="the one language a nearly general neuron leaves out")


def gate_activations(lo: float = -5.0, hi: float = 3.0) -> Figure:
    """SiLU (Llama, Mistral) and GELU-tanh (Gemma) against the gate pre-activation z: both are > 0 exactly
    where z > 0 (shaded, "active"), and slightly negative below, with their minimum marked."""
    import torch

    z = torch.linspace(lo, hi, 801)
    curves = {"SiLU: z·σ(z)": torch.nn.functional.silu(z),
              "GELU-tanh": torch.nn.functional.gelu(z, approximate="tanh")}
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.axvspan(0, hi, color="tab:green", alpha=0.08, label="active: act(z) > 0")
    places = ((lo + 0.3, -0.6), (0.35, -0.5))  # where the two minima are labelled, in data coordinates
    for (label, y), color, place in zip(curves.items(), GROUP_COLORS, places, strict=False):
        ax.plot(z, y, color=color, lw=2, label=label)
        low = int(y.argmin())
        ax.plot(z[low], y[low], "o", color=color, ms=5)
        ax.annotate(f"min {float(y[low]):.3f} at z = {float(z[low]):.2f}", (z[low], y[low]), xytext=place,
                    fontsize=8, color=color, va="center", arrowprops={"arrowstyle": "-", "color": color, "lw": 0.8},
                    bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.9})
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("gate pre-activation z")
    ax.set_ylabel("activation act(z)")
    ax.set_ylim(-0.75, hi)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def _compact(value: float) -> str:
    """A short label for a heatmap cell: 0.12, 3.4, 18, 250, 28k, 3e9."""
    size = abs(value)
    if size >= 999_500:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if size >= 1e4:
        return f"{value / 1e3:.0f}k"
    if size >= 10:
        return f"{value:.0f}"
    if size >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def change_heatmap(change, title: str, cbar_label: str = "ΔPPL", linthresh: float = 1.0,
                   xlabel: str = "evaluated language", ylabel: str = "neurons switched off") -> Figure:
    """Annotated heatmap of changes whose sizes span orders of magnitude (e.g. ΔPPL, from 0.01 to 10^4): a
    diverging colour map centred on 0 with a symmetric log scale (linear within ±`linthresh`), so that small and
    huge changes both stay visible; cells show the values themselves. change: a DataFrame (rows: switched-off
    sets, columns: evaluated languages), shown in `LANGS` order where the labels are language codes."""
    import numpy as np
    from matplotlib.colors import SymLogNorm

    rows = [lang for lang in LANGS if lang in change.index] + [r for r in change.index if r not in LANGS]
    cols = [lang for lang in LANGS if lang in change.columns] + [c for c in change.columns if c not in LANGS]
    grid = change.loc[rows, cols].to_numpy(dtype=float)
    span = max(float(np.nanmax(np.abs(grid))), linthresh * 10)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    image = ax.imshow(grid, cmap="RdBu_r", norm=SymLogNorm(linthresh, vmin=-span, vmax=span, base=10))
    for (r, c), v in np.ndenumerate(grid):
        strong = abs(v) > linthresh * (span / linthresh) ** 0.6
        ax.text(c, r, _compact(v), ha="center", va="center", fontsize=7.5, color="white" if strong else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    top = int(np.ceil(np.log10(span)))
    low = int(np.floor(np.log10(linthresh)))
    step = max(1, int(np.ceil((top - low + 1) / 4)))  # at most about 4 decades labelled on each side
    decades = [10.0 ** e for e in range(low, top + 1, step)]
    bar = fig.colorbar(image, ax=ax, label=f"{cbar_label} (symmetric log scale)", shrink=0.85)
    bar.set_ticks([-d for d in reversed(decades)] + [0] + decades)
    bar.set_ticklabels([f"−{_compact(d)}" for d in reversed(decades)] + ["0"] + [_compact(d) for d in decades])
    fig.tight_layout()
    return fig


def layer_changes(changes: Mapping, labels=None, title: str = "") -> Figure:
    """One panel per comparison (name -> per-layer change table with columns specific, related, general, e.g.
    `lnlib.align.layer_change`): the change of each type per layer, as bars around zero (the paper's Fig. 4
    and Figs 17–19). labels: per-layer stage labels (`Stages.labels`) to shade behind every panel."""
    import numpy as np

    fig, axes = plt.subplots(1, len(changes), figsize=(4.6 * len(changes), 3.4), squeeze=False, sharey=True)
    for ax, (name, table) in zip(axes[0], changes.items(), strict=True):
        layers = np.arange(len(table))
        for i, kind in enumerate(("specific", "related", "general")):
            ax.bar(layers - 0.3 + 0.3 * i, table[kind].to_numpy(), 0.3, color=TYPE_COLORS[kind], label=kind)
        if labels is not None:
            _shade_stages(ax, labels)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlim(-0.6, len(table) - 0.4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylabel("change in neurons (after − before)")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def loss_curves(losses: Mapping, title: str = "") -> Figure:
    """Training loss per step of one or more runs (label -> losses, e.g. `lnlib.align.AlignRun.losses`), steps
    numbered from 1."""
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for name, values in losses.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=name)
    ax.set(xlabel="step", ylabel="loss (NLL per token)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig
