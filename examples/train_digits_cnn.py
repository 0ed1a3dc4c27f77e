"""Train the digits-cnn example and write digits_cnn/{weights,test}.npz under a folder you give.

    python -m tensorsmith.examples.train_digits_cnn [--out DIR] [--epochs N]

DIR defaults to the current folder. The bundled copy inside the package is never
overwritten: to ship new weights, copy the two files into examples/digits_cnn/ yourself.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

if __package__:
    from .digits_cnn import BN_EPS, apply, batch_norm, conv, head
else:  # run as a plain script: python examples/train_digits_cnn.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from digits_cnn import BN_EPS, apply, batch_norm, conv, head

PACKAGE_DIR = Path(__file__).resolve().parent
SUBFOLDER = "digits_cnn"
SEED = 0
EPOCHS = 40
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
MIN_ACCURACY = 0.95

Tree = Any


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1] as (N, 8, 8, 1) float32, with a stratified 80/20 split."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SEED
    )
    return x_train, x_test, y_train, y_test


def init_params(key: jax.Array) -> Tree:
    """He-normal kernels, zero biases, identity batch-norm."""
    k0, k1, k2, k3 = jax.random.split(key, 4)

    def he(k: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
        return jax.random.normal(k, shape, jnp.float32) * jnp.sqrt(2.0 / fan_in)

    def bn(c: int) -> dict[str, jax.Array]:
        return {
            "scale": jnp.ones(c),
            "bias": jnp.zeros(c),
            "mean": jnp.zeros(c),
            "var": jnp.ones(c),
        }

    return {
        "params": {
            "Conv_0": {"kernel": he(k0, (3, 3, 1, 16), 9), "bias": jnp.zeros(16)},
            "BatchNorm_0": bn(16),
            "Conv_1": {"kernel": he(k1, (3, 3, 16, 32), 144), "bias": jnp.zeros(32)},
            "BatchNorm_1": bn(32),
            "Dense_0": {"kernel": he(k2, (512, 64), 512), "bias": jnp.zeros(64)},
            "Dense_1": {"kernel": he(k3, (64, 10), 64), "bias": jnp.zeros(10)},
        }
    }


def batch_stats_norm(x: jax.Array, p: Tree) -> jax.Array:
    """Training batch-norm: normalize with the current batch's statistics."""
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    return (x - mean) * (p["scale"] * jax.lax.rsqrt(var + BN_EPS)) + p["bias"]


def train_forward(params: Tree, x: jax.Array) -> jax.Array:
    """Forward pass with batch statistics, as used during training."""
    p = params["params"]
    x = conv(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"], stride=1)
    x = jax.nn.relu(batch_stats_norm(x, p["BatchNorm_0"]))
    x = conv(x, p["Conv_1"]["kernel"], p["Conv_1"]["bias"], stride=2)
    x = jax.nn.relu(batch_stats_norm(x, p["BatchNorm_1"]))
    return head(x, p)


def loss_fn(params: Tree, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy."""
    logp = jax.nn.log_softmax(train_forward(params, x))
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()


def is_trainable(path: tuple[Any, ...]) -> bool:
    """Population mean/var are computed after training, not learned."""
    return path[-1].key not in ("mean", "var")


@jax.jit
def train_step(
    params: Tree, m: Tree, v: Tree, t: jax.Array, x: jax.Array, y: jax.Array
) -> tuple[Tree, Tree, Tree, jax.Array]:
    """One Adam step (beta1=0.9, beta2=0.999) on a minibatch."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    lr = LEARNING_RATE * jnp.sqrt(1 - b2**t) / (1 - b1**t)

    def update(path, p, m, v):
        return p - lr * m / (jnp.sqrt(v) + eps) if is_trainable(path) else p

    params = jax.tree_util.tree_map_with_path(update, params, m, v)
    return params, m, v, loss


def population_stats(params: Tree, x: jax.Array) -> Tree:
    """Return params with each batch-norm's mean/var set to training-set statistics."""
    p = {name: dict(layer) for name, layer in params["params"].items()}
    h = conv(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"], stride=1)
    p["BatchNorm_0"].update(mean=h.mean((0, 1, 2)), var=h.var((0, 1, 2)))
    # Layer 1 statistics must see layer 0 normalized with its population stats.
    h = jax.nn.relu(batch_norm(h, p["BatchNorm_0"]))
    h = conv(h, p["Conv_1"]["kernel"], p["Conv_1"]["bias"], stride=2)
    p["BatchNorm_1"].update(mean=h.mean((0, 1, 2)), var=h.var((0, 1, 2)))
    return {"params": p}


def accuracy(params: Tree, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the inference model."""
    logits = jax.jit(apply)(params, x)
    return float((np.asarray(logits).argmax(-1) == y).mean())


def flatten(tree: Tree, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts to 'a/b/c' keys with float32 numpy leaves."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = np.asarray(value, dtype=np.float32)
    return flat


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz atomically (tensorsmith's atomic_write: a temp file renamed into place)."""
    from tensorsmith.ir.serialize import atomic_write
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; refuses an --out inside the installed package."""
    ap = argparse.ArgumentParser(prog="python -m tensorsmith.examples.train_digits_cnn",
                                 description="Train the digits CNN; write DIR/digits_cnn/"
                                             "weights.npz and test.npz.")
    ap.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                    help="folder to write digits_cnn/ into (default: the current folder)")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default: {EPOCHS})")
    ap.add_argument("--min-accuracy", type=float, default=MIN_ACCURACY,
                    help=f"write nothing below this held-out accuracy (default: {MIN_ACCURACY})")
    args = ap.parse_args(argv)
    target = (args.out / SUBFOLDER).resolve()
    if target == PACKAGE_DIR or PACKAGE_DIR in target.parents:
        ap.error(f"--out {str(args.out)!r} is inside the tensorsmith package ({PACKAGE_DIR}); "
                 "the bundled weights are never overwritten: write elsewhere and copy the files")
    return args


def main(argv=None) -> Path:
    """Train, check held-out accuracy, and write the weights and test split; returns the folder."""
    args = parse_args(argv)
    out_dir = args.out / SUBFOLDER
    x_train, x_test, y_train, y_test = load_data()
    params = init_params(jax.random.key(SEED))
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    rng = np.random.default_rng(SEED)
    steps_per_epoch = len(x_train) // BATCH_SIZE
    t = 0
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            t += 1
            params, m, v, loss = train_step(
                params, m, v, jnp.float32(t), x_train[idx], y_train[idx]
            )
            losses.append(loss)
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {float(np.mean(losses)):.4f}")

    params = population_stats(params, jnp.asarray(x_train))
    train_acc = accuracy(params, x_train, y_train)
    test_acc = accuracy(params, x_test, y_test)
    print(f"train accuracy {train_acc:.4f}")
    if test_acc < args.min_accuracy:
        sys.exit(f"held-out accuracy {test_acc:.4f} < {args.min_accuracy}; not writing weights")

    save_npz_atomic(out_dir / "weights.npz", flatten(params))
    save_npz_atomic(out_dir / "test.npz", {"x_test": x_test, "y_test": y_test})
    print(f"wrote {out_dir / 'weights.npz'} and {out_dir / 'test.npz'}")
    print(f"held-out accuracy {test_acc:.4f} ({len(y_test)} images)")
    return out_dir


if __name__ == "__main__":
    main()
