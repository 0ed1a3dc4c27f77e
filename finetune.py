"""Fine-tuning a compiled model's params with optax: masks in force, distillation, gradual sparsity."""
from __future__ import annotations

import difflib
import fnmatch
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import codegen
from .errors import UsageFailure

__all__ = ["FinetuneHistory", "Finetuned", "Polynomial", "finetune", "magnitude_mask", "polynomial"]


def _optax():
    try:
        import optax
    except ImportError:  # an optional extra: say how to get it
        raise UsageFailure("tensorsmith.finetune needs optax: pip install 'tensorsmith[train]' "
                           "(or pip install optax)") from None
    return optax


# --- gradual sparsity -------------------------------------------------------------------------
@dataclass(frozen=True)
class Polynomial:
    """Sparsity from ``initial`` to ``final`` over ``[begin, end)`` steps, cubic by default
    (Zhu & Gupta 2017); magnitude masks are recomputed every ``every`` steps."""

    final: float
    initial: float = 0.0
    begin: int = 0
    end: int | None = None          # None: the last step of the run
    every: int = 10
    power: float = 3.0
    include: tuple = ("*",)         # param name globs the schedule prunes
    exclude: tuple = ()
    min_rank: int = 2               # biases and norms (rank 1) are left dense

    def sparsity(self, step: int, total: int) -> float:
        """The target sparsity at ``step`` of a ``total``-step run."""
        end = self.end if self.end is not None else max(self.begin + 1, total - 1)
        if step <= self.begin:
            return self.initial
        frac = min(1.0, (step - self.begin) / max(1, end - self.begin))
        return self.final + (self.initial - self.final) * (1.0 - frac) ** self.power

    def targets(self, params: dict) -> list[str]:
        """The params this schedule prunes."""
        return [k for k, v in params.items()
                if np.ndim(v) >= self.min_rank and jnp.issubdtype(v.dtype, jnp.floating)
                and any(fnmatch.fnmatchcase(k, g) for g in self.include)
                and not any(fnmatch.fnmatchcase(k, g) for g in self.exclude)]


def polynomial(sparsity: float, *, initial: float = 0.0, begin: int = 0, end: int | None = None,
               every: int = 10, power: float = 3.0, include=("*",), exclude=()) -> Polynomial:
    """A gradual magnitude-sparsity schedule: ``initial`` -> ``sparsity``, re-masked every ``every`` steps."""
    for name, v in (("sparsity", sparsity), ("initial", initial)):
        if not 0.0 <= v < 1.0:
            raise UsageFailure(f"polynomial({name}={v!r}): a sparsity is in [0, 1)")
    if every < 1:
        raise UsageFailure(f"polynomial(every={every!r}): must be >= 1")
    return Polynomial(sparsity, initial, begin, end, every, power, tuple(include), tuple(exclude))


def magnitude_mask(w, sparsity: float) -> np.ndarray:
    """True where ``w`` keeps its entry: all but the ``floor(sparsity * size)`` smallest |w|."""
    a = np.abs(np.asarray(w, np.float64)).ravel()
    k = int(np.floor(sparsity * a.size))
    keep = np.ones(a.size, bool)
    if k > 0:
        keep[np.argsort(a, kind="stable")[:k]] = False
    return keep.reshape(np.shape(w))


# --- data -------------------------------------------------------------------------------------
def _split(item, n_inputs: int):
    """(inputs tuple, labels or None) from one batch: ``inputs``, ``(inputs, labels)``."""
    if not isinstance(item, (tuple, list)):
        item = (item,)
    if len(jax.tree_util.tree_leaves(item)) == n_inputs:
        return tuple(item), None
    if len(item) == 2:
        x, y = item
        x = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        if len(jax.tree_util.tree_leaves(x)) == n_inputs:
            return x, y
    raise UsageFailure(f"finetune(data=...): each batch is the model's {n_inputs} input(s), or "
                       f"(inputs, labels); got a {type(item).__name__} of "
                       f"{len(jax.tree_util.tree_leaves(item))} arrays")


def _batches(data):
    """Endless batches from a re-iterable (a list: cycled) or one pass of an iterator."""
    if iter(data) is data:  # a generator or iterator: one pass
        yield from data
        return
    while True:
        empty = True
        for item in data:
            empty = False
            yield item
        if empty:
            raise UsageFailure("finetune(data=...) is empty")


# --- losses -----------------------------------------------------------------------------------
def _task_loss(loss):
    if callable(loss):
        return loss
    if loss in ("cross_entropy", "ce"):
        optax = _optax()

        def ce(out, labels):
            logits = _single(out, "cross_entropy")
            labels = jnp.asarray(labels)
            if jnp.issubdtype(labels.dtype, jnp.integer):
                return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return optax.softmax_cross_entropy(logits, labels).mean()
        return ce
    if loss == "mse":
        return lambda out, labels: jnp.mean((_single(out, "mse") - labels) ** 2)
    raise UsageFailure(f"finetune(loss={loss!r}): give a function loss(outputs, labels) -> scalar "
                       "or one of 'cross_entropy', 'mse'")


def _single(out, what):
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1:
        raise UsageFailure(f"finetune(loss={what!r}) needs a model with one output; this one has "
                           f"{len(leaves)}: pass loss=fn(outputs, labels)")
    return leaves[0]


def _distill_loss(kind: str, temperature: float) -> Callable:
    """loss(student outputs, teacher outputs), summed over output leaves."""
    t = float(temperature)

    def kl(s, te):
        logp_t = jax.nn.log_softmax(te / t, axis=-1)
        logp_s = jax.nn.log_softmax(s / t, axis=-1)
        return jnp.mean(jnp.sum(jnp.exp(logp_t) * (logp_t - logp_s), axis=-1)) * t * t

    def cosine(s, te):
        s = s / (jnp.linalg.norm(s, axis=-1, keepdims=True) + 1e-12)
        te = te / (jnp.linalg.norm(te, axis=-1, keepdims=True) + 1e-12)
        return jnp.mean(1.0 - jnp.sum(s * te, axis=-1))

    def similarity(s, te):  # relational: each row's softmax over its in-batch similarities
        s, te = s.reshape(s.shape[0], -1), te.reshape(te.shape[0], -1)
        s = s / (jnp.linalg.norm(s, axis=-1, keepdims=True) + 1e-12)
        te = te / (jnp.linalg.norm(te, axis=-1, keepdims=True) + 1e-12)
        off = 1e9 * jnp.eye(s.shape[0], dtype=s.dtype)
        logp_t = jax.nn.log_softmax((te @ te.T - off) / t, axis=-1)
        logp_s = jax.nn.log_softmax((s @ s.T - off) / t, axis=-1)
        return jnp.mean(jnp.sum(jnp.exp(logp_t) * (logp_t - logp_s), axis=-1))

    kinds = {"kl": kl, "mse": lambda s, te: jnp.mean((s - te) ** 2), "cosine": cosine,
             "similarity": similarity}
    if callable(kind):
        one = kind
    else:
        parts = [kinds.get(k.strip()) for k in str(kind).split("+")]
        if not kind or None in parts:
            raise UsageFailure(f"finetune(distill={kind!r}): one of {', '.join(map(repr, kinds))}, "
                               "several joined by '+' (summed), or a function(student, teacher)")
        one = parts[0] if len(parts) == 1 else (lambda s, te: sum(f(s, te) for f in parts))

    def loss(s_out, t_out):
        return sum(one(s, jax.lax.stop_gradient(te)) for s, te in
                   zip(jax.tree_util.tree_leaves(s_out), jax.tree_util.tree_leaves(t_out)))
    return loss


# --- the result -------------------------------------------------------------------------------
@dataclass
class FinetuneHistory:
    """What a finetune run did: losses per step, evaluations, the params it kept and why."""

    steps: int = 0                                 # optimizer steps taken
    loss: list = field(default_factory=list)       # training loss of each step
    evals: list = field(default_factory=list)      # (step, eval loss, accuracy or None)
    sparsity: list = field(default_factory=list)   # (step, target sparsity) at each re-mask
    best_step: int = 0                             # the step whose params were kept
    best_loss: float = float("inf")
    kept: str = "last"                             # 'best' or 'last'
    interrupted: bool = False                      # stopped by KeyboardInterrupt
    seconds: float = 0.0
    samples: int = 0
    masked: dict = field(default_factory=dict)     # param name -> fraction of entries masked

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        last = f"{self.loss[-1]:.4g}" if self.loss else "-"
        ev = f", eval {self.evals[-1][1]:.4g}" if self.evals else ""
        return (f"finetune: {self.steps} steps in {self.seconds:.1f}s "
                f"({self.samples_per_second:.0f} samples/s), loss {last}{ev}; kept the {self.kept} "
                f"params (step {self.best_step}){' after Ctrl-C' if self.interrupted else ''}")


class Finetuned(NamedTuple):
    """finetune()'s result: the new compiled model and what the run did."""

    model: Any
    history: FinetuneHistory


# --- masks ------------------------------------------------------------------------------------
def _mask_annotations(graph) -> dict:
    """Masks the graph carries as ``mask`` annotations (param name -> bool array)."""
    of = getattr(graph, "annotations_of", None)
    if of is None:
        return {}
    return {a.target: np.asarray(a.array, bool) for a in of("mask")
            if a.array is not None and a.target in graph.params}


def _with_masks(graph, masks: dict):
    """``graph`` carrying ``masks`` as mask annotations (where the IR has annotations)."""
    if not masks or not hasattr(graph, "with_annotations"):
        return graph
    from .ir.annotations import Annotation
    add = [Annotation(k, "mask", {"sparsity": round(float(1 - m.mean()), 6)}, np.asarray(m, bool))
           for k, m in masks.items()]
    return graph.with_annotations(add=add, drop=[(k, "mask") for k in masks])


# --- the loop ---------------------------------------------------------------------------------
def _zeros(graph):
    """Abstract-free stand-ins for the graph's inputs (to learn the output structure)."""
    from .ir import numpy_dtype
    return [jax.ShapeDtypeStruct(tuple(d if isinstance(d, int) else 1 for d in v.type.shape),
                                 numpy_dtype(v.type.dtype)) for v in graph.inputs]

def _teacher_fn(cm, teacher):
    """(fn(teacher_params, *inputs) -> outputs, teacher_params) or None."""
    if teacher is False:
        return None
    if teacher is None:
        src = cm.source
        if src is None:
            return None
        flat = codegen.to_jax(src)
        names = tuple(src.params)
        out_tree = jax.tree_util.tree_structure(jax.eval_shape(lambda *xs: cm.apply({}, *xs), *_zeros(cm.graph)))
        return (lambda p, *xs: jax.tree_util.tree_unflatten(out_tree, flat([p[k] for k in names], *xs)),
                {k: jnp.asarray(v) for k, v in src.params.items()})
    if hasattr(teacher, "apply") and hasattr(teacher, "params"):  # another CompiledModel
        return (lambda p, *xs: teacher.apply(p, *xs),
                {k: jnp.asarray(v) for k, v in teacher.params.items()})
    if callable(teacher):
        return (lambda p, *xs: teacher(*xs)), {}
    raise UsageFailure(f"finetune(teacher=...) takes a CompiledModel, a function of the inputs, "
                       f"None (the source model) or False; got {type(teacher).__name__}")


# --- intermediate values (layer-wise distillation) -------------------------------------------
def _value_types(graph) -> dict:
    """Every top-level value of ``graph`` (inputs and node results): name -> Value."""
    out = {v.name: v for v in graph.inputs}
    for n in graph.nodes:
        out.update((v.name, v) for v in n.outputs)
    return out


def _hidden_names(student, teacher, hidden) -> list[str]:
    """The intermediate values both graphs compute with the same name and type.

    ``'auto'``: the data inputs of the student's dot/conv layers (a block's hidden state) that
    the teacher also has unchanged, i.e. the hidden states pruning did not narrow; a list may
    hold ``'auto'`` beside value names (e.g. the last hidden state, which no layer reads).
    """
    s_vals, t_vals = _value_types(student), _value_types(teacher)
    same = lambda k: k in t_vals and t_vals[k].type == s_vals[k].type  # noqa: E731
    inputs = {v.name for v in student.inputs}
    if hidden == "auto":
        names = [v.name for n in student.nodes if n.op in ("dot_general", "conv")
                 and any(v.name in student.params for v in n.inputs)
                 for v in n.inputs if v.name not in student.params and v.name not in inputs]
        names = [k for k in dict.fromkeys(names) if same(k)]
        if not names:
            raise UsageFailure("finetune(hidden='auto'): no input of a dot/conv layer of "
                               f"{student.name} has a value of the same name and type in the "
                               "teacher; give teacher= the dense model compiled with the same "
                               "passes, or hidden=[value names]")
        return names
    asked = (hidden,) if isinstance(hidden, str) else tuple(hidden)
    if "auto" in asked:  # 'auto' among names: its values, then the named ones
        named = _hidden_names(student, teacher, [k for k in asked if k != "auto"]) \
            if len(asked) > 1 else []
        return list(dict.fromkeys(_hidden_names(student, teacher, "auto") + named))
    names = [str(k).lstrip("%") for k in asked]
    for k in names:
        if k not in s_vals:
            close = difflib.get_close_matches(k, list(s_vals), n=1)
            raise UsageFailure(f"finetune(hidden=...): {student.name} has no value %{k}"
                               + (f" (closest: %{close[0]})" if close else ""))
        if not same(k):
            got = t_vals[k].type if k in t_vals else "no such value"
            raise UsageFailure(f"finetune(hidden=...): %{k} is {s_vals[k].type} in the student, "
                               f"{got} in the teacher")
    return names


def _with_hidden(graph, names, out_tree):
    """fn(params dict, *inputs) -> (outputs, [hidden values]) of ``graph``."""
    vals = _value_types(graph)
    flat = codegen.to_jax(graph.replace(outputs=tuple(graph.outputs) + tuple(vals[k] for k in names)))
    keys, n_out = tuple(graph.params), len(graph.outputs)

    def fn(p, *inputs):
        res = flat([p[k] for k in keys], *jax.tree_util.tree_leaves(inputs))
        return jax.tree_util.tree_unflatten(out_tree, res[:n_out]), list(res[n_out:])
    return fn


def _hidden_loss(s_vals, t_vals, mask=None):
    """Mean over the values of the MSE relative to the teacher's mean square (scale-free);
    with ``mask``, over the positions where it is nonzero (values it prefixes in shape)."""
    parts = []
    for s, t in zip(s_vals, (jax.lax.stop_gradient(t) for t in t_vals)):
        if mask is not None and s.shape[:mask.ndim] == mask.shape:
            w = mask.astype(s.dtype).reshape(mask.shape + (1,) * (s.ndim - mask.ndim))
            parts.append(jnp.sum(w * (s - t) ** 2) / (jnp.sum(w * t ** 2) + 1e-12))
        else:
            parts.append(jnp.mean((s - t) ** 2) / (jnp.mean(t ** 2) + 1e-12))
    return sum(parts) / len(parts)


def _input_index(graph, name, option: str) -> int:
    """The position of graph input ``name`` (a name, or an int position)."""
    names = [v.name for v in graph.inputs]
    if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(names):
        return name
    if isinstance(name, str) and name.lstrip("%") in names:
        return names.index(name.lstrip("%"))
    close = difflib.get_close_matches(str(name), names, n=1)
    raise UsageFailure(f"finetune({option}={name!r}): {graph.name} has inputs "
                       f"{', '.join(names)}" + (f" (closest: {close[0]})" if close else ""))


def finetune(cm, data: Iterable, *, steps: int, loss="auto", teacher=None,
             temperature: float = 2.0, alpha: float = 0.5, distill: str = "kl",
             hidden=None, hidden_weight: float = 1.0, hidden_mask=None,
             schedule: Polynomial | None = None, optimizer=None, lr: float = 1e-3,
             eval_data: Iterable | None = None, eval_every: int | None = None,
             masks: dict | None = None, trainable=None, keep: str | None = None,
             progress: bool = True) -> Finetuned:
    """Train ``cm``'s params with optax; returns ``Finetuned(model, history)``, ``cm`` unchanged.

    ``data``: batches of ``inputs`` or ``(inputs, labels)`` (a list is cycled, an iterator read
    once). Loss: ``loss(outputs, labels)`` (or 'cross_entropy' / 'mse'; 'auto': cross-entropy
    for integer labels, else mse) weighted ``1 - alpha``, plus ``alpha`` times the distillation
    loss against ``teacher`` (default: the model before its passes, ``cm.source``; False: none)
    on outputs softened at ``temperature`` (``distill``: 'kl', 'mse', 'cosine', 'similarity':
    the KL between each example's softmax over its cosine similarities to the rest of the batch
    at ``temperature``, student against teacher, which keeps embeddings' neighbours; several
    joined by '+' are summed; or a function(student leaf, teacher leaf) -> scalar). Without
    labels only the distillation loss trains. Masks (the graph's ``mask`` annotations and
    ``masks=``, param name -> bool) hold after every step; ``schedule=polynomial(S)`` prunes
    gradually by magnitude. Ctrl-C stops and keeps the best params so far (by eval loss with
    ``eval_data``, else training loss); ``keep='best'|'last'`` chooses at a normal end.
    ``hidden``: layer-wise distillation: intermediate values (names, 'auto': the inputs of
    dot/conv layers the teacher has with the same name and type, or a list of both) matched to
    the teacher's by relative MSE, weighted ``hidden_weight``; ``hidden_mask``: an input (name
    or position) whose zeros mark positions to leave out, e.g. a transformer's attention mask.
    The teacher is then a graph (None: ``cm.source``, or a CompiledModel: compile the dense
    model with the same passes so the names match).
    Evaluation (and the best step) uses the output losses only.
    """
    optax = _optax()
    if not isinstance(steps, int) or steps < 1:
        raise UsageFailure(f"finetune(steps={steps!r}): a positive int")
    if not 0.0 <= alpha <= 1.0:
        raise UsageFailure(f"finetune(alpha={alpha!r}): the distillation weight is in [0, 1]")
    if temperature <= 0:
        raise UsageFailure(f"finetune(temperature={temperature!r}): must be > 0")
    keep = keep or ("best" if eval_data is not None else "last")
    if keep not in ("best", "last"):
        raise UsageFailure(f"finetune(keep={keep!r}): 'best' or 'last'")
    graph = cm.graph
    n_inputs = len(graph.inputs)
    all_params = {k: jnp.asarray(v) for k, v in graph.params.items()}
    floating = [k for k, v in all_params.items() if jnp.issubdtype(v.dtype, jnp.floating)]
    if trainable is None:
        names = floating
    else:
        globs = (trainable,) if isinstance(trainable, str) else tuple(trainable)
        names = [k for k in floating if any(fnmatch.fnmatchcase(k, g) for g in globs)]
        if not names:
            raise UsageFailure(f"finetune(trainable={trainable!r}) matches no floating param of "
                               f"{graph.name}; it has {', '.join(floating[:8])}")
    frozen = {k: v for k, v in all_params.items() if k not in names}
    mask = dict(_mask_annotations(graph))
    for k, m in (masks or {}).items():
        if k not in all_params:
            raise UsageFailure(f"finetune(masks=...): {graph.name} has no param {k!r}")
        if np.shape(m) != tuple(all_params[k].shape):
            raise UsageFailure(f"finetune(masks=...): mask of {k!r} has shape {np.shape(m)}, "
                               f"the param {tuple(all_params[k].shape)}")
        mask[k] = np.asarray(m, bool) & mask.get(k, True)
    params = {k: all_params[k] for k in names}
    teach = _teacher_fn(cm, teacher)
    distill_fn = _distill_loss(distill, temperature) if teach is not None else None
    student_fn, mask_at = None, None
    if hidden is not None:
        t_graph = cm.source if teacher is None else getattr(teacher, "graph", None)
        if teach is None or t_graph is None:
            raise UsageFailure("finetune(hidden=...) matches values of the teacher's graph: give "
                               "teacher=None (the source model) or a CompiledModel")
        if not hidden_weight > 0:
            raise UsageFailure(f"finetune(hidden_weight={hidden_weight!r}): must be > 0")
        hidden_names = _hidden_names(graph, t_graph, hidden)
        out_tree = jax.tree_util.tree_structure(
            jax.eval_shape(lambda *xs: cm.apply({}, *xs), *_zeros(graph)))
        mask_at = None if hidden_mask is None else _input_index(graph, hidden_mask, "hidden_mask")
        student_fn = _with_hidden(graph, hidden_names, out_tree)
        teach = (_with_hidden(t_graph, hidden_names, out_tree), teach[1])
    elif hidden_mask is not None:
        raise UsageFailure("finetune(hidden_mask=...) weights the hidden-state loss: give hidden= too")
    task = None if loss is None else loss
    opt = optimizer if optimizer is not None else optax.adam(lr)

    def apply_masks(p, m):
        return {k: (v * m[k].astype(v.dtype) if k in m else v) for k, v in p.items()}

    def objective(p, tparams, inputs, labels, task_fn, train=True):
        if distill_fn is None and (task_fn is None or labels is None):
            raise UsageFailure("finetune: nothing to train on: a batch has no labels and there is "
                               "no teacher (teacher=False); give (inputs, labels) batches or a teacher")
        if student_fn is None:
            out, s_hid = cm.apply({**frozen, **p}, *inputs), None
        else:
            out, s_hid = student_fn({**frozen, **p}, *inputs)
        total, parts = 0.0, 0
        if task_fn is not None and labels is not None:
            total = total + (1.0 - alpha if distill_fn is not None else 1.0) * task_fn(out, labels)
            parts += 1
        if distill_fn is not None:
            t_out = teach[0](tparams, *inputs)
            if s_hid is not None:
                t_out, t_hid = t_out
                if train:  # the best step is chosen on the output losses alone
                    total = total + hidden_weight * _hidden_loss(
                        s_hid, t_hid, None if mask_at is None else inputs[mask_at])
            total = total + (alpha if parts else 1.0) * distill_fn(out, t_out)
            parts += 1
        return total, out

    def make_step(task_fn):
        def step(p, opt_state, m, tparams, inputs, labels):
            (value, _), grads = jax.value_and_grad(objective, has_aux=True)(p, tparams, inputs, labels, task_fn)
            updates, opt_state = opt.update(grads, opt_state, p)
            p = apply_masks(optax.apply_updates(p, updates), m)
            return p, opt_state, value
        return jax.jit(step)

    def make_eval(task_fn):
        def ev(p, tparams, inputs, labels):
            value, out = objective(p, tparams, inputs, labels, task_fn, train=False)
            correct = None
            leaves = jax.tree_util.tree_leaves(out)
            if labels is not None and len(leaves) == 1 and leaves[0].ndim == 2 and \
                    jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
                correct = jnp.sum(jnp.argmax(leaves[0], -1) == labels)
            return value, correct
        return jax.jit(ev)

    history = FinetuneHistory(kept=keep)
    tparams = teach[1] if teach is not None else {}
    dev_mask = {k: jnp.asarray(v) for k, v in mask.items() if k in params}
    params = apply_masks(params, dev_mask)
    opt_state = opt.init(params)
    steppers: dict = {}
    evaluators: dict = {}

    def task_for(labels):
        if labels is None or task is None:
            return None
        if task == "auto":
            lab = np.asarray(labels)
            return _task_loss("cross_entropy" if np.issubdtype(lab.dtype, np.integer) else "mse")
        return _task_loss(task)

    def run_eval(p):
        tot, n, correct, counted = 0.0, 0, 0, True
        for item in eval_data:
            inputs, labels = _split(item, n_inputs)
            fn_key = None if labels is None else np.asarray(labels).dtype.kind
            if fn_key not in evaluators:
                evaluators[fn_key] = make_eval(task_for(labels))
            v, c = evaluators[fn_key](p, tparams, tuple(jnp.asarray(x) for x in inputs),
                                      None if labels is None else jnp.asarray(labels))
            b = int(np.shape(jax.tree_util.tree_leaves(inputs)[0])[0]) if np.ndim(jax.tree_util.tree_leaves(inputs)[0]) else 1
            tot, n = tot + float(v) * b, n + b
            if c is None:
                counted = False
            else:
                correct += int(c)
        if n == 0:
            raise UsageFailure("finetune(eval_data=...) is empty")
        return tot / n, (correct / n if counted else None)

    every = eval_every or max(1, steps // 10)
    best = (float("inf"), params, 0)
    if eval_data is not None:
        ev_loss, acc = run_eval(params)
        history.evals.append((0, ev_loss, acc))
        best = (ev_loss, params, 0)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc=f"finetune {graph.name}", unit="step", leave=False)
        except ImportError:
            bar = None
    t0 = time.perf_counter()
    it = _batches(data)
    step = 0
    try:
        while step < steps:
            if schedule is not None and (step - schedule.begin) % schedule.every == 0 \
                    and step >= schedule.begin:
                s = schedule.sparsity(step, steps)
                host = {k: np.asarray(v) for k, v in params.items()}
                for k in schedule.targets(host):
                    fixed = mask.get(k)
                    m = magnitude_mask(host[k] if fixed is None else np.where(fixed, host[k], 0), s)
                    dev_mask[k] = jnp.asarray(m if fixed is None else (m & fixed))
                params = apply_masks(params, dev_mask)
                history.sparsity.append((step, s))
            try:
                item = next(it)
            except StopIteration:
                break
            inputs, labels = _split(item, n_inputs)
            inputs = tuple(jnp.asarray(x) for x in inputs)
            key = (None if labels is None else np.asarray(labels).dtype.kind, tuple(dev_mask))
            if key not in steppers:
                steppers[key] = make_step(task_for(labels))
            before = params
            params, opt_state, value = steppers[key](params, opt_state, dev_mask, tparams, inputs,
                                                     None if labels is None else jnp.asarray(labels))
            value = float(value)
            if not np.isfinite(value):
                raise UsageFailure(f"finetune: the loss became {value} at step {step} "
                                   f"(lower lr={lr}?); the input model is unchanged")
            history.loss.append(value)
            history.samples += int(inputs[0].shape[0]) if inputs[0].ndim else 1
            if eval_data is None and value < best[0]:
                best = (value, before, step)  # the loss was measured on the params before the step
            step += 1
            history.steps = step
            if eval_data is not None and (step % every == 0 or step == steps):
                ev_loss, acc = run_eval(params)
                history.evals.append((step, ev_loss, acc))
                if ev_loss < best[0]:
                    best = (ev_loss, params, step)
            if bar is not None:
                el = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}", samples_s=f"{history.samples / el:.0f}" if el else "-")
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    history.seconds = time.perf_counter() - t0
    if history.interrupted or keep == "best":
        history.best_loss, chosen, history.best_step = best
        history.kept = "best"
        if chosen is None or (eval_data is None and not history.loss):
            chosen, history.best_step = params, step
    else:
        chosen, history.best_step = params, step
        history.best_loss = history.evals[-1][1] if history.evals else (
            history.loss[-1] if history.loss else float("nan"))
        history.kept = "last"
    final_masks = {k: np.asarray(v) for k, v in dev_mask.items()}
    history.masked = {k: float(1 - m.mean()) for k, m in final_masks.items()}
    new = cm.with_params({k: np.asarray(v) for k, v in chosen.items()})
    if final_masks:
        new = _attach_masks(new, final_masks)
    return Finetuned(new, history)


def _attach_masks(cm, masks: dict):
    """``cm`` whose graph carries ``masks`` as annotations (when the IR has them)."""
    graph = _with_masks(cm.graph, masks)
    if graph is cm.graph:
        return cm
    return cm.with_graph(graph)
