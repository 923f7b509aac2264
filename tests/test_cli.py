"""The command line on a tiny model saved to a folder: counts equal the library's, bit for bit, from one process,
two torchrun processes, two job-array shards merged, and a run killed and resumed; identify and ppl-grid read
what count wrote; options come from TOML; bad input gets a clear error."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import capture, cli, counts, identify, models, runs
from lnlib.distributed import Rank, batch_share

VENV_BIN = Path(sys.executable).parent


def _lines(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for k, lang in enumerate(("is", "fo", "kl")):
        for i in range(n):
            words = " ".join(f"w{rng.randrange(10 * k, 10 * k + 30)}" for _ in range(rng.randrange(3, 14)))
            out.append({"lang": lang, "prompt": "w1 w2", "response": words} if i % 2 else {"lang": lang, "text": words})
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    word_tokenizer().save_pretrained(model)
    data = root / "texts.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in _lines(0, 41)) + "\n")
    return root, model, data


def _expected_examples(data):
    by_lang = {}
    for line in map(json.loads, data.read_text().splitlines()):
        by_lang.setdefault(line["lang"], []).append(line.get("text") or (line["prompt"], line["response"]))
    return by_lang


def _expected(model_dir, data, batch_size=8):
    """One process, the library directly: the same batches as every split run of the command line."""
    model, tokenizer = models.load_model(model_dir, device="cpu")
    return capture.count_by_language(model, tokenizer, _expected_examples(data), batch_size=batch_size,
                                     progress=False)


def _same(a, b):
    assert list(a) == list(b)
    for lang in a:
        assert torch.equal(a[lang].over_zero, b[lang].over_zero), lang
        assert (a[lang].n_tokens, a[lang].n_examples) == (b[lang].n_tokens, b[lang].n_examples), lang


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def test_ranks_share_every_batch_once():
    for n in (0, 1, 5, 41):
        for size in (1, 2, 3, 7):
            parts = [batch_share(n, r, size) for r in range(size)]
            assert sorted(sum(parts, [])) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        batch_share(5, 2, 2)


def test_count_equals_the_library(setup, capsys):
    root, model, data = setup
    out = root / "one"
    assert cli.main(["count", "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "4"]) == 0
    got, provenance = counts.load_counts(out / "counts.safetensors")
    _same(got, _expected(model, data, batch_size=4))
    assert provenance["model"] == str(model) and provenance["data"] == ["texts.jsonl"] and provenance["ranks"] == 1
    assert "is" in capsys.readouterr().out


def test_two_torchrun_processes_equal_one(setup):
    root, model, data = setup
    out = root / "torchrun"
    done = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "lnlib", "count",
                           "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "4"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got, provenance = counts.load_counts(out / "counts.safetensors")
    _same(got, _expected(model, data, batch_size=4))
    assert provenance["ranks"] == 2


def test_job_array_shards_merge_to_the_whole(setup):
    root, model, data = setup
    out = root / "array"
    for job in ("0/3", "1/3", "2/3"):
        assert cli.main(["count", "--model", str(model), "--data", str(data), "--out", str(out), "--shard", job]) == 0
    files = sorted(str(p) for p in out.glob("counts-shard-*.safetensors"))
    assert len(files) == 3
    assert cli.main(["merge", *files, "--out", str(out / "counts.safetensors")]) == 0
    merged, provenance = counts.load_counts(out / "counts.safetensors")
    _same(merged, _expected(model, data))
    assert "shard" not in provenance and len(provenance["merged"]) == 3


def test_a_crashed_run_resumes_to_the_same_counts(setup, monkeypatch):
    root, model_dir, data = setup
    model, tokenizer = models.load_model(model_dir, device="cpu")
    examples = _expected_examples(data)
    folder = root / "crash"
    calls = {"n": 0}
    real = runs.count_activations

    def crash_on_fourth(*args, **kwargs):  # chunks of 16 (10 rounded up to whole batches of 8): is 16, 16, 9; fo 16
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "count_activations", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        runs.count_shard(model, tokenizer, examples, Rank(), folder, checkpoint_every=10)
    partial, saved = counts.load_counts(runs.checkpoint_path(folder, Rank()), kind=runs.CHECKPOINT)
    assert saved["done"] == {"is": 41, "fo": 0, "kl": 0} and partial["is"].n_examples == 41
    monkeypatch.setattr(runs, "count_activations", real)
    resumed = runs.count_shard(model, tokenizer, examples, Rank(), folder, checkpoint_every=10, resume=True)
    _same(resumed, _expected(model_dir, data))
    changed = {**examples, "kl": examples["kl"][:-1]}
    with pytest.raises(ValueError, match="belongs to another run"):
        runs.count_shard(model, tokenizer, changed, Rank(), folder, checkpoint_every=10, resume=True)


def test_a_killed_process_resumes_to_the_same_counts(setup, tmp_path):
    root, model, _ = setup
    data = tmp_path / "big.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in _lines(1, 1500)) + "\n")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "lnlib", "count", "--model", str(model), "--data", str(data), "--out", str(out),
               "--checkpoint-every", "20", "--batch-size", "4"]
    run = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = runs.checkpoint_path(out, Rank())
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert checkpoint.exists() and not (out / "counts.safetensors").exists(), "the run was not stopped half-way"
    counts.load_counts(checkpoint, kind=runs.CHECKPOINT)  # whole, even when the kill landed in a later write
    (checkpoint.parent / f".{checkpoint.name}.killed.partial").write_bytes(b"half")  # as such a kill leaves
    done = subprocess.run(command + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(checkpoint.parent.glob(".*.partial")), "the interrupted write was not cleared away"
    got, _ = counts.load_counts(out / "counts.safetensors")
    _same(got, _expected(model, data, batch_size=4))


def test_identify_and_ppl_grid_read_what_count_wrote(setup, tmp_path, capsys):
    root, model, data = setup
    assert cli.main(["count", "--model", str(model), "--data", str(data), "--out", str(tmp_path)]) == 0
    neurons = tmp_path / "neurons.safetensors"
    assert cli.main(["identify", str(tmp_path / "counts.safetensors"), "--out", str(neurons), "--lam", "0.05"]) == 0
    ident, provenance = identify.load(neurons)
    assert ident.langs == ("is", "fo", "kl") and provenance["counts"] == "counts.safetensors"
    assert "specific" in capsys.readouterr().out
    grid = tmp_path / "grid.csv"
    assert cli.main(["ppl-grid", "--model", str(model), "--neurons", str(neurons), "--data", str(data),
                     "--out", str(grid)]) == 0
    rows = [line.split(",")[0] for line in grid.read_text().splitlines()[1:]]
    assert rows == ["none", "is", "fo", "kl", "random:is", "random:fo", "random:kl"]


def test_options_come_from_toml_and_the_command_line_wins(setup, tmp_path):
    root, model, data = setup
    config = tmp_path / "run.toml"
    config.write_text(f'model = "{model}"\n[count]\ndata = ["{data}"]\nout = "{tmp_path / "from-toml"}"\n'
                      'batch-size = 2\nmax-length = 6\n')
    assert cli.main(["count", "--config", str(config), "--max-length", "8"]) == 0
    _, provenance = counts.load_counts(tmp_path / "from-toml" / "counts.safetensors")
    assert provenance["max_length"] == 8
    config.write_text('batch_sise = 2\n')
    with pytest.raises(SystemExit):
        cli.main(["count", "--config", str(config)])


@pytest.mark.parametrize("line, message", [
    ("not json", "texts.jsonl:2: not valid JSON"),
    ('{"text": "w1"}', 'texts.jsonl:2: "lang" must be a non-empty string'),
    ('{"lang": "is", "prompt": "w1"}', 'texts.jsonl:2: give either "text", or "prompt" and "response"'),
    ('{"lang": "is", "text": 3}', 'texts.jsonl:2: "text" must be a string'),
])
def test_bad_data_lines_are_named(setup, tmp_path, capsys, line, message):
    _, model, _ = setup
    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"lang": "is", "text": "w1 w2"}\n' + line + "\n")
    assert cli.main(["count", "--model", str(model), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_command_line_errors_say_what_to_do(setup, tmp_path, capsys):
    _, model, data = setup
    with pytest.raises(SystemExit):
        cli.main(["count", "--data", str(data)])
    assert "count needs --out" in capsys.readouterr().err
    assert cli.main(["count", "--dataset", "mgsm", "--data", str(data), "--out", str(tmp_path)]) == 2
    assert "give --data or --dataset, not both" in capsys.readouterr().err
    shard = ["count", "--model", str(model), "--data", str(data), "--out", str(tmp_path), "--shard", "2/2"]
    assert cli.main(shard) == 2
    assert "I must be in 0..N-1" in capsys.readouterr().err
    # Counts of its own: under xdist, the test that writes root / "one" may run in another process.
    count = ["count", "--model", str(model), "--data", str(data), "--out", str(tmp_path)]
    assert cli.main(count) == 0
    capsys.readouterr()
    before = (tmp_path / "counts.safetensors").read_bytes()
    assert cli.main(count) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "counts.safetensors").read_bytes() == before
    assert cli.main(["identify", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "n")]) == 2
    assert "does not exist" in capsys.readouterr().err
