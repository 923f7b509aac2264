"""lnlib.plot: figures carry the labels and values they are meant to show."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lnlib import plot  # noqa: E402
from lnlib.data import LANGS  # noqa: E402
from lnlib.stats import Estimate  # noqa: E402


def test_accuracy_change_is_an_annotated_heatmap_centred_on_zero():
    values = [[(0.25 if r == c else -0.5 if c == 0 else 0.0) for c in range(len(LANGS))] for r in range(len(LANGS))]
    fig = plot.accuracy_change(values, "my title")
    ax = fig.axes[0]
    assert ax.get_title() == "my title"
    assert ax.get_xlabel() == "evaluated language" and ax.get_ylabel() == "neurons switched off"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LANGS)
    cells = [t.get_text() for t in ax.texts]
    assert cells[:3] == ["0.25", "0.00", "0.00"] and cells[len(LANGS)] == "-0.50"  # row by row, two decimals
    norm = ax.images[0].norm
    assert norm.vcenter == 0 and norm.vmin == -0.5 and norm.vmax == 0.5  # symmetric about zero
    assert fig.axes[1].get_ylabel() == "accuracy change"
    plt.close(fig)


def test_lang_bars_draw_an_estimates_interval_and_loss_curves_number_steps_from_one():
    fig = plot.lang_bars({"ru": Estimate(-0.5, -0.75, -0.25), "en": Estimate(0.25, 0.0, 1.0)}, "change", "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en", "ru"]  # the paper's order
    assert [round(bar.get_height(), 2) for bar in ax.patches] == [0.25, -0.5]
    lows, highs = (line.get_ydata() for line in ax.containers[0].lines[1])  # the error bars' caps
    assert list(lows) == [0.0, -0.75] and list(highs) == [1.0, -0.25]
    plt.close(fig)
    fig = plot.loss_curves({"alignment": [3.0, 2.0, 1.5], "control": [2.0, 1.0, 0.5]}, "losses")
    ax = fig.axes[0]
    assert [list(line.get_xdata()) for line in ax.lines] == [[1, 2, 3], [1, 2, 3]]
    assert list(ax.lines[1].get_ydata()) == [2.0, 1.0, 0.5] and ax.get_title() == "losses"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["alignment", "control"]
    plt.close(fig)


def test_neuron_bars_and_n_bars_label_their_axes():
    fig = plot.neuron_bars({"specific": [1] * len(LANGS), "related": [2] * len(LANGS)}, title="t", stacked=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LANGS) and ax.get_title() == "t"
    assert ax.get_xlabel() == "language" and ax.get_ylabel() == "selected neurons above τ in the language"
    assert [p.get_y() for p in ax.patches][len(LANGS):] == [1.0] * len(LANGS)  # related stacked on specific
    plt.close(fig)
    fig = plot.n_bars({"all": [5, 3, 1], "paper": (4, 2, 8)}, title="N", log=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"] and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "N = number of languages above τ" and ax.get_ylabel() == "neurons"
    assert [p.get_height() for p in ax.patches] == [5, 3, 1, 4, 2, 8]
    plt.close(fig)


def test_n_shares_draws_percentages_per_n_on_a_log_scale():
    fig = plot.n_shares({"a": [50.0, 10.0, 40.0], "b": [20.0, 30.0, 50.0]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
    assert ax.get_xlabel() == "N = languages above τ" and ax.get_ylabel() == "% of all neurons"
    assert ax.get_yscale() == "log" and ax.get_title() == "neurons above τ in exactly N languages"
    assert [p.get_height() for p in ax.containers[1]] == [20.0, 30.0, 50.0] and not ax.texts
    plt.close(fig)


def test_nearly_general_draws_the_missed_share_of_each_table():
    import pandas as pd

    tables = {m: pd.DataFrame({"% of N = 9 neurons missing it": values}, index=["en", "de", "fr"])
              for m, values in (("x", [50.0, 30.0, 20.0]), ("y", [10.0, 60.0, 30.0]))}
    fig = plot.nearly_general(tables)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en", "de", "fr"]
    assert ax.get_ylabel() == "% of neurons above τ in 2 of 3 languages"
    assert [p.get_height() for p in ax.containers[0]] == [50.0, 30.0, 20.0]
    assert [p.get_height() for p in ax.containers[1]] == [10.0, 60.0, 30.0]
    plt.close(fig)


def test_grouped_bars_draw_an_estimate_at_its_value():
    from lnlib.stats import Estimate

    fig = plot.grouped_bars({"s": {"en": Estimate(2.0, 1.0, 3.0), "de": 5.0}}, ["en", "de"], "language", "value")
    assert [p.get_height() for p in fig.axes[0].containers[0]] == [2.0, 5.0]
    plt.close(fig)
