"""The instructor page's answer keys, written by `make book` from this build's own results (never typed):

- for every exercise, what its check printed when the chapter ran with the reference solution; a student's
  correct function reproduces it;
- for the suggested assignments that need neither a GPU nor new model work, their expected numbers, computed here
  from the released Mistral-7B statistics and the default model's counts (cached by chapter 2).

An assignment that needs a GPU, a model from the hub, new model runs or a student's own material gets no computed
key; the page says so and its rubric is the key. Usage: python tools/answer_key.py (after tools/build_book.py).
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pandas as pd
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402

from lnlib import identify, models, pipeline, profiles, stages, stats, store  # noqa: E402
from lnlib.controls import released_resample  # noqa: E402
from lnlib.counts import load_released_counts  # noqa: E402
from lnlib.data import LANGS  # noqa: E402

OUT = ROOT / "book" / "generated" / "answers"
EXERCISE = re.compile(r"^\*\*(\d+\.[^*]+)\*\*", re.MULTILINE)  # an exercise's prompt: **2. Its title.**


def _printed(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out["text"])
        elif "data" in out:
            data = out["data"]
            text = data.get("text/markdown") or data.get("text/plain")
            if text:
                parts.append(text if isinstance(text, str) else "".join(text))
            elif "image/png" in data:
                parts.append("(a figure)")
    return "\n".join(p.rstrip() for p in parts).strip()


def exercise_outputs(nb) -> list[tuple[str, str]]:
    """(exercise heading, what its checks printed) for every exercise of an executed chapter: the code cells after
    a `solution` cell, up to the next Markdown cell ("" for an exercise answered in prose)."""
    found, after_solution = [], False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found += [(title.strip(), "") for title in EXERCISE.findall("".join(cell.source))]
            after_solution = False
        elif "solution" in cell.metadata.get("tags", []):
            after_solution = True
        elif after_solution and found:
            title, printed = found[-1]
            found[-1] = (title, f"{printed}\n{_printed(cell)}".strip())
    return found


# ----------------------------------------------------------------------------------------------
# Assignments computed here (no GPU, no new model work)


def rate_sweep() -> str:
    """Chapter 1, assignment 2: AutoSweep on the released MGSM statistics at five selection rates."""
    rows = {}
    for rate in (0.005, 0.01, 0.02, 0.05, 0.10):
        study = pipeline.from_released("mgsm", pipeline.Settings(widen=None, rate=rate))
        counts = study.ident.lang_counts()
        rows[f"{rate:.1%}"] = {"λ*": round(study.lam, 4),
                               "English specific + related": int(counts.loc["en", "language"]),
                               "fewest, other languages": int(counts["language"].drop("en").min()),
                               "general": study.ident.n_general}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("rate")
    english_fewest = (table["English specific + related"] < table["fewest, other languages"]).sum()
    return (f"{table.to_markdown()}\n\nEnglish has fewer language neurons than every other language at "
            f"{english_fewest} of {len(table)} rates; general neurons exist at {(table['general'] > 0).sum()} of "
            f"{len(table)}.")


def _stage_map(idents: dict) -> str:
    grid = [(low, high, final) for low in (0.05, 0.1, 0.15) for high in (0.2, 0.3, 0.5) for final in (0.8, 0.9, 0.95)]
    rows = {}
    for low, high, final in grid:
        rows[(low, high, final)] = {}
        for name, ident in idents.items():
            s = stages.stages_of(ident, low=low, high=high, final=final)
            found = "four: stages 2, 3, 4 start at layers " + ", ".join(map(str, s.boundaries))
            rows[(low, high, final)][name] = found if s.found else "not four"
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis(["LOW", "HIGH", "FINAL"])
    shares = ", ".join(f"{name}: {(table[name] != 'not four').sum()} of {len(table)}" for name in idents)
    return f"Threshold settings that yield four stages: {shares}.\n\n{table.reset_index().to_markdown(index=False)}"


def threshold_map() -> str:
    """Chapter 4, assignment 2: where the stage rule finds four stages, over a grid of its thresholds."""
    profile = profiles.get_profile("cpu")
    model, tokenizer = models.load_model(profile.model, dtype=profile.dtype)
    gemma = pipeline.language_neurons(model, tokenizer, profile.texts(), pipeline.Settings())
    return _stage_map({"Mistral-7B (released)": pipeline.from_released("mgsm").ident, "Gemma 3 270M": gemma.ident})


def released_stability() -> str:
    """Chapter 8, assignment 2: binomial resamples of the released statistics at rates of 0.5 % and 2 %."""
    tokens = pd.Series(load_released_counts("mgsm").response_tokens.tolist(), index=LANGS, name="response tokens")
    parts = []
    for rate in (0.005, 0.02):
        kept = released_resample("mgsm", n=10, settings=pipeline.Settings(widen=None, rate=rate))
        mean = kept["kept (mean)"].unstack("kind")
        kept_share = mean.mean(axis=1)
        rho = stats.partial_spearman(kept_share.values, tokens.reindex(kept_share.index).values, [])
        parts.append(f"**Rate {rate:.1%}** (10 draws; rank correlation of the mean kept share with the response "
                     f"tokens: {rho:.2f}; least stable: {kept_share.idxmin()}):\n\n"
                     f"{mean.join(tokens).round(3).to_markdown()}")
    return "\n\n".join(parts)


COMPUTED = {"01_finding_language_neurons": {2: rate_sweep}, "04_four_stages": {2: threshold_map},
            "08_are_language_neurons_real": {2: released_stability}}


def chapter_key(path: Path, nb) -> str:
    lines = []
    if nb is None:
        lines.append("*This chapter's current code has not been executed by a build yet: no key.*")
    else:
        for title, printed in exercise_outputs(nb):
            if not printed:
                lines.append(f"- **Exercise {title}** A written answer: the chapter's folded solution is the key.")
                continue
            lines.append(f"- **Exercise {title}** Its check printed, with the reference solution:\n\n  ```text\n"
                         + "\n".join(f"  {line}" for line in printed.splitlines()) + "\n  ```")
    for number, compute in COMPUTED.get(path.stem, {}).items():
        lines.append(f"- **Assignment {number}**, computed in this build ({compute.__doc__.split(': ', 1)[1]})\n\n"
                     + "\n".join(f"  {line}" if line else "" for line in compute().splitlines()))
    others = "the other assignments" if path.stem in COMPUTED else "assignments 2 and 3"
    lines.append(f"- For {others}, no key is computed here: they need a GPU, a model from the hub, new model runs "
                 "or the student's own material; the rubric is the key.")
    return "\n".join(lines) + "\n"


def main() -> None:
    cache = get_cache(str(build_book.CACHE))
    OUT.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", identify.IntervalWarning)
        for path in build_book.chapters():
            store.write_text(OUT / f"{path.stem}.md", chapter_key(path, build_book.executed(path, cache)))
            print(f"[answers] {path.stem}", flush=True)


if __name__ == "__main__":
    main()
