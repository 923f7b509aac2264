"""lnlib: language-neuron analysis for the book reproducing Zhang et al., "How does Alignment Enhance LLMs'
Multilingual Capabilities? A Language Neurons Perspective" (AAAI 2026).

Modules follow the data's path: data -> models -> protocols -> capture -> counts -> identify -> pipeline ->
intervene -> evaluate -> grids -> align -> compare -> plot; `distributed`, `runs` and `cli` take counting beyond one
process (`python -m lnlib`).
"""

from lnlib.config import cache_dir, fast_mode, offline

__version__ = "0.2.0"
__all__ = ["__version__", "cache_dir", "fast_mode", "offline"]
