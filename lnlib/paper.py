"""The paper's numbers, transcribed once, each with where it comes from (Zhang et al., AAAI 2026, arXiv 2505.21505
v3). Chapters set their results beside these; nothing here is computed. Matrices are in the paper's language order
en ru es fr de zh ja bn th sw (rows: the language whose neurons are switched off; columns: the evaluated one).
Values read off heatmaps are as printed in the figures' cells.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGS = ("en", "ru", "es", "fr", "de", "zh", "ja", "bn", "th", "sw")


@dataclass(frozen=True)
class Reported:
    """A transcribed value (a number, a tuple or a mapping) and its source in the paper."""

    value: object
    source: str


FIG15_BEFORE = Reported((10052, 4631, 2742, 1857, 1346, 945, 690, 678, 883, 16803),
                        "Fig. 15(a): neurons above τ in exactly N = 1…10 languages, MistralMathOctopus-7B, MGSM")
FIG15_AFTER = Reported((9566, 4395, 2804, 2011, 1555, 1106, 891, 878, 1054, 17774),
                       "Fig. 15(b): the same after MAPO alignment")
FIG5 = Reported((-486, -236, 62, 154, 209, 161, 201, 200, 171, 971),
                "Fig. 5: change per N = 1…10 after alignment (Fig. 15(b) − Fig. 15(a))")
TABLE3 = Reported({"en": {"specific": 46, "related": 603}, "non-English mean": {"specific": 613, "related": 2006}},
                  "Table 3: language neurons of English and the non-English mean, base model, MGSM")
TABLE2 = Reported({"trained": {"specific": -37, "related": 232}, "untrained": {"specific": -36, "related": 205}},
                  "Table 2: mean change of specific and related neurons, zh/de ⇒ en, trained vs other languages")
TABLE4 = Reported({"domain": {"specific": 80.7, "related": 92.3}, "alignment": {"specific": 95.6, "related": 92.1}},
                  "Table 4: overlap ratio (%) with the base model on MGSM: MSVAMP vs MGSM; aligned vs base")
FIG4_SIGNS = Reported({1: {"specific": 1, "related": 1, "general": -1}, 2: {"general": 1}, 3: {"general": -1},
                       4: {"specific": -1, "related": -1, "general": 1}},
                      "Fig. 4 as the text describes it: the sign of each type's change after alignment, per stage")
SEC52_SIGNS = Reported({"specific": -1, "related": 1, "general": 1},
                       "Sec. 5.2: after alignment, fewer language-specific and more language-related and general "
                       "neurons (the sign of each class's change)")

FIG2 = Reported({
    "specific": (
        (0.00, 0.02, 0.04, 0.00, -0.01, 0.02, 0.01, 0.01, -0.02, 0.02),
        (-0.00, -0.03, -0.01, -0.01, -0.01, 0.02, 0.00, 0.02, -0.00, 0.02),
        (0.00, -0.01, 0.01, 0.01, -0.00, 0.01, -0.00, 0.00, 0.00, -0.02),
        (0.01, 0.01, 0.00, -0.06, 0.01, 0.02, -0.00, -0.01, -0.02, 0.00),
        (0.00, 0.00, 0.01, 0.00, -0.05, 0.00, -0.01, 0.02, 0.02, 0.00),
        (-0.00, 0.00, 0.01, -0.01, 0.00, -0.01, 0.00, -0.00, 0.00, 0.01),
        (0.00, -0.02, -0.00, 0.02, -0.02, 0.00, -0.00, 0.01, 0.01, -0.01),
        (0.01, -0.01, 0.01, 0.01, 0.00, 0.02, 0.00, -0.09, -0.03, 0.01),
        (0.01, 0.00, 0.00, 0.00, 0.00, 0.01, -0.01, 0.02, -0.22, -0.02),
        (0.01, -0.00, -0.00, -0.00, -0.01, 0.02, -0.00, 0.00, -0.01, 0.01)),
    "specific+related": (
        (-0.01, 0.00, 0.01, -0.00, -0.00, 0.00, -0.02, 0.02, -0.02, 0.01),
        (-0.00, -0.42, -0.02, -0.01, -0.02, -0.02, -0.04, 0.01, -0.07, 0.02),
        (-0.02, 0.02, -0.04, -0.02, -0.02, -0.01, -0.01, 0.03, -0.03, 0.03),
        (-0.01, 0.00, -0.02, -0.15, -0.03, -0.02, -0.05, 0.01, -0.04, 0.03),
        (-0.02, 0.00, -0.01, -0.01, -0.18, -0.01, -0.03, 0.02, -0.03, -0.00),
        (-0.01, 0.01, -0.01, -0.00, -0.02, -0.38, -0.19, -0.04, -0.15, 0.02),
        (0.00, 0.02, -0.01, 0.02, -0.05, -0.23, -0.53, -0.06, -0.29, 0.06),
        (0.01, -0.10, 0.01, 0.00, -0.01, -0.03, -0.32, -0.36, -0.40, 0.00),
        (-0.00, -0.02, 0.00, -0.02, -0.02, -0.02, -0.20, -0.18, -0.52, 0.02),
        (-0.00, 0.02, -0.01, -0.00, 0.00, -0.03, -0.01, -0.01, -0.04, -0.02)),
    "specific+related+general": (
        (-0.12, -0.18, -0.16, -0.13, -0.15, -0.20, -0.24, -0.15, -0.18, -0.16),
        (-0.14, -0.48, -0.15, -0.16, -0.20, -0.26, -0.20, -0.18, -0.14, -0.14),
        (-0.14, -0.17, -0.26, -0.15, -0.20, -0.22, -0.20, -0.17, -0.17, -0.16),
        (-0.13, -0.16, -0.20, -0.25, -0.24, -0.22, -0.21, -0.17, -0.16, -0.15),
        (-0.13, -0.14, -0.21, -0.14, -0.34, -0.16, -0.24, -0.17, -0.16, -0.15),
        (-0.13, -0.19, -0.17, -0.14, -0.16, -0.44, -0.37, -0.20, -0.21, -0.13),
        (-0.13, -0.20, -0.17, -0.13, -0.23, -0.41, -0.54, -0.27, -0.30, -0.12),
        (-0.12, -0.32, -0.18, -0.16, -0.19, -0.26, -0.41, -0.38, -0.39, -0.15),
        (-0.13, -0.20, -0.20, -0.15, -0.16, -0.32, -0.35, -0.35, -0.54, -0.33),
        (-0.13, -0.16, -0.21, -0.15, -0.22, -0.21, -0.24, -0.18, -0.16, -0.33)),
}, "Fig. 2(a–c): accuracy change after deactivation, MistralMathOctopus-7B, MGSM (transcribed from the figure)")

FIG10_DIAGONAL = Reported({
    "specific": (0.01, -0.01, 0.01, 0.21, 0.26, 0.00, 0.09, 0.60, 1.24, 0.50),
    "specific+related": (0.00, 1.23, 0.28, 0.64, 0.83, 1.05, 2.44, 2.27, 2.79, 0.83),
    "specific+related+general": (0.94, 5.24, 2.10, 1.84, 2.41, 2.21, 2.20, 3.64, 4.36, 2.76),
}, "Fig. 10(a–c): diagonal of the perplexity change after deactivation, MistralMathOctopus-7B, MGSM")
FIG11_DIAGONAL = Reported({
    "specific+related": (-0.01, 1.20, -0.01, 0.40, 0.44, 1.15, 2.18, 2.23, 2.77, 0.69),
    "specific+related+general": (0.74, 1.73, 0.78, 1.09, 1.22, 1.70, 2.36, 2.43, 3.10, 1.25),
}, "Fig. 11(b, c): diagonal of the perplexity change after deactivation, MistralMathOctopus-7B, MSVAMP")
FIG7_DIAGONAL = Reported({
    "specific": (-0.02, -0.04, -0.02, -0.06, -0.03, -0.00, 0.02, -0.11, -0.26, -0.02),
    "specific+related": (-0.01, -0.52, -0.06, -0.11, -0.11, -0.48, -0.55, -0.45, -0.52, -0.08),
    "specific+related+general": (-0.17, -0.57, -0.23, -0.25, -0.27, -0.52, -0.54, -0.45, -0.52, -0.13),
}, "Fig. 7(a–c): diagonal of the accuracy change after deactivation, MistralMathOctopus-7B, MSVAMP")
FIG8_DIAGONAL = Reported({
    "specific+related": (0.01, -0.37, -0.05, -0.04, -0.02, -0.13, -0.06, -0.14, -0.28, 0.00),
    "specific+related+general": (-0.07, -0.45, -0.19, -0.16, -0.22, -0.21, -0.22, -0.24, -0.39, -0.05),
}, "Fig. 8(b, c): diagonal of the accuracy change after deactivation, MetaMathOctopus-7B, MGSM")
FIG9_DIAGONAL = Reported({
    "specific+related": (-0.01, -0.42, -0.03, -0.04, -0.02, -0.17, -0.21, -0.22, -0.30, -0.01),
    "specific+related+general": (-0.12, -0.51, -0.18, -0.14, -0.11, -0.31, -0.22, -0.31, -0.41, -0.04),
}, "Fig. 9(b, c): diagonal of the accuracy change after deactivation, MetaMathOctopus-7B, MSVAMP")
FIG13_DIAGONAL = Reported({
    "specific+related": (-0.00, 1.02, 0.06, 0.11, 0.15, 0.58, 0.50, 0.85, 1.09, 0.42),
}, "Fig. 13(b): diagonal of the perplexity change after deactivation, MetaMathOctopus-7B, MSVAMP")
FIG6_DIAGONALS = Reported((
    {"ru": 0.79, "es": 0.25, "fr": 0.67, "de": 0.96, "zh": 0.93, "ja": 6.48, "bn": 6.67, "th": 11.88, "sw": 1.32},
    {"ru": 0.87, "es": 0.21, "fr": 0.40, "de": 0.93, "zh": 0.87, "ja": 7.32, "bn": 8.65, "th": 14.82, "sw": 1.33},
), "Fig. 6: diagonal perplexity change with LAPE's (Tang et al.) specific neurons switched off, MGSM; the two panels "
   "are the base and the aligned model, in an order the extracted text does not give")

TABLE5_LANGS = ("bn", "th", "sw", "ja", "zh", "ru", "de", "es", "fr", "en")
TABLE5 = Reported({
    "MGSM": {
        "base": (43.6, 53.2, 50.4, 55.6, 59.6, 59.2, 61.2, 62.8, 56.8, 75.6),
        "zh ⇒ en": (49.6, 58.4, 54.8, 56.4, 65.2, 70.0, 66.4, 72.8, 68.8, 78.4),
        "zh/de ⇒ en": (46.4, 55.6, 59.2, 56.8, 64.0, 71.2, 66.8, 71.2, 69.2, 75.2),
        "sw/th ⇒ en": (48.8, 58.8, 59.2, 56.4, 68.4, 68.4, 69.2, 69.6, 70.4, 77.6),
        "zh/es/ru ⇒ en": (46.0, 56.4, 58.8, 54.8, 63.2, 70.8, 68.8, 71.6, 69.6, 76.8),
        "all 9 ⇒ en": (49.6, 60.0, 56.4, 56.4, 64.4, 64.8, 65.2, 65.2, 61.2, 76.4),
    },
    "MSVAMP": {
        "base": (49.3, 62.5, 60.6, 60.9, 67.4, 64.9, 66.5, 67.6, 67.2, 77.0),
        "zh ⇒ en": (52.8, 62.5, 60.9, 63.7, 66.6, 67.5, 69.4, 69.8, 69.7, 76.5),
        "zh/de ⇒ en": (53.2, 62.0, 62.9, 65.3, 66.1, 68.7, 69.9, 69.0, 70.1, 77.0),
        "sw/th ⇒ en": (53.8, 67.4, 65.1, 67.7, 71.9, 71.4, 71.9, 72.0, 72.8, 78.9),
        "zh/es/ru ⇒ en": (52.9, 63.2, 61.5, 63.0, 67.8, 68.1, 69.8, 68.7, 70.6, 78.3),
        "all 9 ⇒ en": (54.9, 65.9, 65.6, 68.6, 69.7, 70.2, 72.3, 71.6, 71.6, 77.3),
    },
}, "Table 5: accuracy (%) of MistralMathOctopus-7B and its MAPO alignments, in the order bn th sw ja zh ru de es fr en")
TABLE5_AVERAGES = Reported({"MGSM": {"base": 57.8, "zh ⇒ en": 64.1, "zh/de ⇒ en": 63.6, "sw/th ⇒ en": 64.7,
                                     "zh/es/ru ⇒ en": 63.7, "all 9 ⇒ en": 62.0},
                            "MSVAMP": {"base": 64.4, "zh ⇒ en": 65.9, "zh/de ⇒ en": 66.4, "sw/th ⇒ en": 69.3,
                                       "zh/es/ru ⇒ en": 66.4, "all 9 ⇒ en": 68.8}},
                           "Table 5: the rows' averages as printed")


def table3_versus() -> dict[str, int]:
    """Table 3 under the names `lnlib.identify.Identification.versus` gives its own counts ("en specific", "en related",
    "others, mean specific", "others, mean related"), to set the two side by side."""
    table = TABLE3.value
    return {"en specific": table["en"]["specific"], "en related": table["en"]["related"],
            "others, mean specific": table["non-English mean"]["specific"],
            "others, mean related": table["non-English mean"]["related"]}


def fig2_points_lost(off: str, evaluated: str, setting: str = "specific+related") -> int:
    """Accuracy points that Fig. 2 shows `evaluated` losing when the `setting` neurons of `off` are switched off:
    −100 × the transcribed change, rounded to whole points."""
    if setting not in FIG2.value:
        raise ValueError(f"Fig. 2 has no setting {setting!r}; known: {', '.join(FIG2.value)}")
    for lang in (off, evaluated):
        if lang not in LANGS:
            raise ValueError(f"language {lang!r} is not in Fig. 2; known: {', '.join(LANGS)}")
    return round(-100 * FIG2.value[setting][LANGS.index(off)][LANGS.index(evaluated)])


def diagonal(figure: Reported, setting: str) -> dict[str, float]:
    """A transcribed diagonal (or, for Fig. 2, the diagonal of the matrix) as {language: value}."""
    values = figure.value[setting]
    if isinstance(values[0], tuple):
        values = tuple(row[i] for i, row in enumerate(values))
    return dict(zip(LANGS, values, strict=True))
