import lnlib


def test_fast_mode_follows_environment(monkeypatch):
    monkeypatch.delenv("LNLIB_FAST", raising=False)
    assert not lnlib.fast_mode()
    monkeypatch.setenv("LNLIB_FAST", "1")
    assert lnlib.fast_mode()
    monkeypatch.setenv("LNLIB_FAST", "0")
    assert not lnlib.fast_mode()


def test_offline_follows_any_hf_variable(monkeypatch):
    for name in lnlib.config.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert not lnlib.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert lnlib.offline()


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path))
    assert lnlib.cache_dir() == tmp_path
    monkeypatch.delenv("LNLIB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lnlib.cache_dir() == tmp_path / "xdg" / "lnlib"


def test_progress_bar_obeys_tqdm_disable_even_when_asked_for(monkeypatch):
    from lnlib.config import progress_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress_bar(range(3), "x").disable
    assert progress_bar(range(3), "x", progress=False).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = progress_bar(range(3), "x", progress=True)
    assert bar.disable and list(bar) == [0, 1, 2]
