"""A Colab-like run of chapters 0 and 1: lnlib installed (not editable) in a clean virtualenv, the two notebooks
copied alone into an empty folder and executed there in fast mode, with no data folder: the data arrive through
lnlib's real download path, every checksum verified, from a mirror of the data folder served on 127.0.0.1
(`LNLIB_DATA_URL`, the variable readers use for their own mirror).

    python tools/colab_like.py VENV_PYTHON [DATA_FOLDER]

Without DATA_FOLDER (a machine with no copy of the data, such as a GitHub runner) the data come from their
upstream repositories instead, through the same code.

The converted default model is taken from the usual cache (Colab converts it once per session; that path is what
chapter 0 runs everywhere else); data go to a cache of their own, so every file is downloaded and checked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ("00_model_and_data.ipynb", "01_finding_language_neurons.ipynb")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(python: str, data: Path | None) -> int:
    sys.path.insert(0, str(ROOT))
    from lnlib.config import OFFLINE_ENVS, cache_dir

    with tempfile.TemporaryDirectory(prefix="lnlib-colab-") as scratch:
        folder, cache = Path(scratch) / "notebooks", Path(scratch) / "cache"
        folder.mkdir()
        cache.mkdir()
        if (cache_dir() / "models").is_dir():
            (cache / "models").symlink_to(cache_dir() / "models")
        for name in CHAPTERS:
            shutil.copy(ROOT / "notebooks" / name, folder / name)
        # Online as on Colab (offline mode would refuse the download), with no data folder.
        env = {k: v for k, v in os.environ.items()
               if k not in ("LNLIB_DATA_DIR", "LNLIB_DATA_URL", "PYTHONPATH", *OFFLINE_ENVS)}
        env.update(LNLIB_CACHE_DIR=str(cache), LNLIB_FAST="1",
                   JUPYTER_PATH=str(Path(python).parents[1] / "share" / "jupyter"))
        log_path = Path(scratch) / "server.log"
        with open(log_path, "w") as log:
            server = None
            if data is not None:
                port = free_port()
                server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                           "--directory", str(data)], stdout=log, stderr=subprocess.STDOUT)
                env["LNLIB_DATA_URL"] = f"http://127.0.0.1:{port}"
                time.sleep(1)
            try:
                done = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", "--nbmake",
                                       "--nbmake-timeout=1800", *CHAPTERS], cwd=folder, env=env)
            finally:
                if server is not None:
                    server.terminate()
                    server.wait()
        requests = [line for line in log_path.read_text().splitlines() if '"GET /' in line]
        files = sorted(p.relative_to(cache / "data").as_posix() for p in (cache / "data").rglob("*") if p.is_file()) \
            if (cache / "data").is_dir() else []
        origin = f"{len(requests)} downloads from the mirror" if data is not None else "data from upstream"
        print(f"[colab-like] {origin}; {len(files)} data files downloaded and verified into the fresh cache")
        if done.returncode == 0 and not files:
            print("[colab-like] error: the chapters ran without downloading any data file")
            return 1
        return done.returncode


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], Path(sys.argv[2]).resolve() if len(sys.argv) == 3 else None))
