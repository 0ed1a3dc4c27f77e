"""Op-level conformance cases: each a torch function and its inputs, compared with torch eager.

Inputs cover what matters to converters: broadcasting, negative dims, non-contiguous
tensors (transposed, strided), int64 and bool, bf16. Cases are grouped into a few modules
(one torch.export and one XLA compile per group) to keep CI fast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_G = torch.Generator().manual_seed(1234)


def f(*shape, lo=-2.0, hi=2.0, dtype=torch.float32):
    return (torch.rand(*shape, generator=_G) * (hi - lo) + lo).to(dtype)


def pos(*shape):
    return f(*shape, lo=0.1, hi=3.0)


def i(*shape, lo=-5, hi=6):
    return torch.randint(lo, hi, shape, generator=_G, dtype=torch.int64)


def b(*shape):
    return torch.rand(*shape, generator=_G) > 0.5


def bf(*shape):
    return f(*shape, dtype=torch.bfloat16)


def t(x):
    """A non-contiguous view of x (its last two dims transposed)."""
    return x.transpose(-1, -2)


# name -> (fn, inputs)
UNARY = {
    "exp": (torch.exp, [f(3, 4)]), "log": (torch.log, [pos(3, 4)]),
    "sqrt": (torch.sqrt, [pos(5)]), "rsqrt": (torch.rsqrt, [pos(2, 3)]),
    "tanh": (torch.tanh, [t(f(3, 4))]), "sigmoid": (torch.sigmoid, [f(4, 3)]),
    "sin": (torch.sin, [f(3)]), "cos": (torch.cos, [f(3)]), "tan": (torch.tan, [f(3, lo=-1, hi=1)]),
    "asin": (torch.asin, [f(4, lo=-0.9, hi=0.9)]), "acos": (torch.acos, [f(4, lo=-0.9, hi=0.9)]),
    "atan": (torch.atan, [f(4)]), "sinh": (torch.sinh, [f(4)]), "cosh": (torch.cosh, [f(4)]),
    "asinh": (torch.asinh, [f(4)]), "acosh": (torch.acosh, [f(4, lo=1.1, hi=4)]),
    "atanh": (torch.atanh, [f(4, lo=-0.9, hi=0.9)]), "erf": (torch.erf, [f(6)]),
    "expm1": (torch.expm1, [f(6)]), "log1p": (torch.log1p, [pos(6)]),
    "log2": (torch.log2, [pos(6)]), "log10": (torch.log10, [pos(6)]),
    "neg": (torch.neg, [i(5)]), "abs": (torch.abs, [f(2, 5)]), "abs_int": (torch.abs, [i(7)]),
    "sign": (torch.sign, [f(7)]), "relu": (torch.relu, [f(2, 6)]),
    "reciprocal": (torch.reciprocal, [pos(5)]), "floor": (torch.floor, [f(6)]),
    "ceil": (torch.ceil, [f(6)]), "trunc": (torch.trunc, [f(8)]), "round": (torch.round, [f(8) * 3]),
    "round_decimals": (lambda x: torch.round(x, decimals=1), [f(8)]),
    "gelu": (F.gelu, [f(3, 5)]), "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [f(3, 5)]),
    "silu": (F.silu, [f(6)]), "hardtanh": (F.hardtanh, [f(6)]), "relu6": (F.relu6, [f(6) * 5]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [f(6)]), "elu": (F.elu, [f(6)]),
    "selu": (F.selu, [f(6)]), "hardsigmoid": (F.hardsigmoid, [f(6) * 4]),
    "hardswish": (F.hardswish, [f(6) * 4]), "softplus": (F.softplus, [f(6)]),
    "logical_not": (torch.logical_not, [b(5)]), "bitwise_not": (torch.bitwise_not, [i(5)]),
    "isnan": (lambda x: torch.isnan(x / x), [f(5)]), "isinf": (lambda x: torch.isinf(1 / (x * 0)), [f(5)]),
    "exp_bf16": (torch.exp, [bf(4, 4)]), "sigmoid_int": (torch.sigmoid, [i(4)]),
}

BINARY = {
    "add_bcast": (lambda x, y: x + y, [f(2, 3, 4), f(4)]),
    "add_alpha": (lambda x, y: torch.add(x, y, alpha=2), [f(3, 4), f(3, 1)]),
    "add_scalar_int": (lambda x: x + 3, [i(5)]),
    "add_int_float": (lambda x: x + 1.5, [i(5)]),
    "add_bf16": (lambda x, y: x + y, [bf(3, 4), bf(1, 4)]),
    "sub": (lambda x, y: x - y, [t(f(3, 4)), f(4, 3)]),
    "sub_alpha": (lambda x, y: torch.sub(x, y, alpha=3), [f(4), f(4)]),
    "rsub": (lambda x: 1 - x, [f(4)]),
    "mul": (lambda x, y: x * y, [f(2, 1, 4), f(3, 1)]), "mul_scalar": (lambda x: x * 0.5, [f(4)]),
    "mul_int": (lambda x, y: x * y, [i(4), i(4)]),
    "div": (lambda x, y: x / y, [f(3, 4), pos(4)]), "div_int": (lambda x, y: x / y, [i(6), i(6, lo=1)]),
    "div_trunc": (lambda x, y: torch.div(x, y, rounding_mode="trunc"), [f(6) * 5, pos(6)]),
    "div_floor": (lambda x, y: torch.div(x, y, rounding_mode="floor"), [f(6) * 5, pos(6)]),
    "div_floor_int": (lambda x, y: torch.div(x, y, rounding_mode="floor"), [i(9, lo=-9, hi=9), i(9, lo=1, hi=4) * torch.tensor([1, -1, 1, -1, 1, -1, 1, -1, 1])]),
    "floordiv_scalar": (lambda x: x // 4, [i(8, lo=-20, hi=20)]),
    "pow_scalar": (lambda x: x ** 2, [f(5)]), "pow_frac": (lambda x: x ** 1.5, [pos(5)]),
    "pow_half": (lambda x: x ** 0.5, [pos(5)]), "pow_tensor": (torch.pow, [pos(4), f(4)]),
    "pow_scalar_base": (lambda x: 2.0 ** x, [f(4)]), "pow_neg_int": (lambda x: x ** -2, [pos(4)]),
    "maximum": (torch.maximum, [f(3, 4), f(4)]), "minimum": (torch.minimum, [f(3, 4), f(3, 1)]),
    "atan2": (torch.atan2, [f(5), f(5)]), "fmod": (torch.fmod, [f(6) * 5, pos(6)]),
    "fmod_int": (torch.fmod, [i(6, lo=-9, hi=9), i(6, lo=1, hi=4)]),
    "remainder": (torch.remainder, [f(6) * 5, f(6, lo=0.5, hi=2) * torch.tensor([1., -1, 1, -1, 1, -1])]),
    "remainder_int": (lambda x: x % 3, [i(8, lo=-9, hi=9)]),
    "bitwise_and": (torch.bitwise_and, [i(5, lo=0, hi=16), i(5, lo=0, hi=16)]),
    "bitwise_or": (lambda x: x | 5, [i(5, lo=0, hi=16)]),
    "bitwise_xor": (torch.bitwise_xor, [b(5), b(5)]),
    "logical_and": (torch.logical_and, [b(4), f(4)]), "logical_or": (torch.logical_or, [i(4), b(4)]),
    "logical_xor": (torch.logical_xor, [b(4), b(4)]),
    "bitwise_and_scalar": (lambda x: x & 3, [i(5, lo=0, hi=16)]),
    "bitwise_or_tensor": (lambda x, y: x | y, [b(5), b(5)]),
    "bitwise_xor_scalar": (lambda x: x ^ 5, [i(5, lo=0, hi=16)]),
    "ge_tensor": (lambda x, y: x >= y, [f(3, 4), f(4)]), "le_tensor": (lambda x, y: x <= y, [i(4), i(4)]),
    "ne_tensor": (lambda x, y: x != y, [i(6, lo=0, hi=3), i(6, lo=0, hi=3)]),
    "lt_scalar": (lambda x: x < 0.2, [f(4)]),
    "eq": (lambda x, y: x == y, [i(6, lo=0, hi=3), i(6, lo=0, hi=3)]), "ne": (lambda x: x != 0.5, [f(4)]),
    "lt": (lambda x, y: x < y, [f(3, 4), f(4)]), "le": (lambda x: x <= 1, [i(5)]),
    "gt": (lambda x, y: x > y, [i(4), f(4)]), "ge": (lambda x: x >= 0.0, [f(4)]),
    "where": (torch.where, [b(3, 4), f(3, 4), f(4)]),
    "where_scalar": (lambda c, x: torch.where(c, x, 0.0), [b(3, 1), f(3, 4)]),
    "masked_fill": (lambda x, m: x.masked_fill(m, -1e4), [f(2, 5), b(5)]),
    "clamp": (lambda x: x.clamp(-0.5, 0.5), [f(6)]), "clamp_min": (lambda x: x.clamp(min=0.1), [f(6)]),
    "clamp_tensor": (lambda x, lo, hi: x.clamp(lo, hi), [f(3, 4), f(4, lo=-1, hi=0), f(3, 1, lo=0, hi=1)]),
    "clamp_int": (lambda x: x.clamp(-2, 3), [i(8)]),
}

NN = {
    "conv2d": (lambda x, w, bias: F.conv2d(x, w, bias, stride=2, padding=1), [f(2, 3, 9, 9), f(4, 3, 3, 3), f(4)]),
    "conv2d_dilated_groups": (lambda x, w: F.conv2d(x, w, padding=2, dilation=2, groups=2), [f(1, 4, 8, 8), f(6, 2, 3, 3)]),
    "conv1d": (lambda x, w: F.conv1d(x, w, padding=1), [f(2, 3, 10), f(5, 3, 3)]),
    "conv3d": (lambda x, w: F.conv3d(x, w), [f(1, 2, 4, 5, 5), f(3, 2, 2, 2, 2)]),
    "conv_transpose2d": (lambda x, w, bias: F.conv_transpose2d(x, w, bias, stride=2, padding=1, output_padding=1), [f(1, 4, 5, 5), f(4, 3, 3, 3), f(3)]),
    "conv_transpose2d_groups": (lambda x, w: F.conv_transpose2d(x, w, stride=2, groups=2), [f(1, 4, 4, 4), f(4, 3, 2, 2)]),
    "linear": (F.linear, [f(2, 3, 5), f(4, 5), f(4)]), "linear_nobias": (F.linear, [f(3, 5), f(4, 5)]),
    "mm": (torch.mm, [f(3, 5), t(f(4, 5))]), "bmm": (torch.bmm, [f(2, 3, 5), f(2, 5, 4)]),
    "matmul_4d": (torch.matmul, [f(2, 2, 3, 5), f(2, 1, 5, 4)]),
    "addmm": (lambda c, a, m: torch.addmm(c, a, m, beta=0.5, alpha=2.0), [f(4), f(3, 5), f(5, 4)]),
    "batch_norm": (lambda x, m, v, w, bb: F.batch_norm(x, m, v, w, bb, False, 0.1, 1e-3), [f(2, 3, 4, 4), f(3), pos(3), f(3), f(3)]),
    "batch_norm_noaffine": (lambda x, m, v: F.batch_norm(x, m, v), [f(2, 3, 5), f(3), pos(3)]),
    "batch_norm_train": (lambda x, w, bb: F.batch_norm(x, None, None, w, bb, training=True), [f(4, 3, 2, 2), f(3), f(3)]),
    "layer_norm": (lambda x, w, bb: F.layer_norm(x, (5,), w, bb), [f(2, 3, 5), f(5), f(5)]),
    "layer_norm_2d": (lambda x: F.layer_norm(x, (3, 5)), [f(2, 3, 5)]),
    "layer_norm_bf16": (lambda x, w: F.layer_norm(x, (8,), w), [bf(3, 8), bf(8)]),
    "group_norm": (lambda x, w, bb: F.group_norm(x, 2, w, bb), [f(2, 4, 3, 3), f(4), f(4)]),
    "softmax": (lambda x: torch.softmax(x, -1), [f(3, 5)]),
    "softmax_dim0": (lambda x: torch.softmax(x, 0), [t(f(3, 5))]),
    "log_softmax": (lambda x: torch.log_softmax(x, 1), [f(2, 4, 3)]),
    "softmax_bf16": (lambda x: torch.softmax(x, -1), [bf(2, 6)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), [f(1, 2, 9, 9)]),
    "max_pool2d_ceil": (lambda x: F.max_pool2d(x, 2, 2, ceil_mode=True), [f(1, 2, 7, 7)]),
    "max_pool2d_dilated": (lambda x: F.max_pool2d(x, 2, 1, dilation=2), [f(1, 1, 6, 6)]),
    "max_pool1d": (lambda x: F.max_pool1d(x, 2), [f(1, 3, 8)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [f(1, 2, 6, 6)]),
    "avg_pool2d_pad": (lambda x: F.avg_pool2d(x, 3, 2, 1), [f(1, 2, 7, 7)]),
    "avg_pool2d_pad_exclude": (lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [f(1, 2, 7, 7)]),
    "avg_pool2d_ceil": (lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True), [f(1, 1, 5, 5)]),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 1, 1), [f(1, 2, 6)]),
    "avg_pool3d": (lambda x: F.avg_pool3d(x, 2), [f(1, 2, 4, 4, 4)]),
    "max_pool3d": (lambda x: F.max_pool3d(x, 2), [f(1, 2, 4, 4, 4)]),
    "adaptive_avg_pool3d": (lambda x: F.adaptive_avg_pool3d(x, 1), [f(1, 2, 3, 4, 5)]),
    "adaptive_avg_pool2d_1": (lambda x: F.adaptive_avg_pool2d(x, 1), [f(2, 3, 5, 7)]),
    "adaptive_avg_pool2d_3x2": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [f(1, 2, 7, 5)]),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 4), [f(1, 2, 10)]),
    "dropout_eval": (lambda x: F.dropout(x, 0.5, training=False), [f(4)]),
    "sdpa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [f(1, 2, 4, 8), f(1, 2, 5, 8), f(1, 2, 5, 8)]),
    "sdpa_causal_mask": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [f(1, 2, 4, 8), f(1, 2, 4, 8), f(1, 2, 4, 8)]),
    "embedding": (F.embedding, [i(3, 4, lo=0, hi=10), f(10, 6)]),
    "embedding_bf16": (F.embedding, [i(5, lo=0, hi=7), bf(7, 3)]),
}

REDUCE = {
    "sum_dim": (lambda x: x.sum(-1), [f(3, 4)]), "sum_all": (lambda x: x.sum(), [f(3, 4)]),
    "sum_keepdim": (lambda x: x.sum((0, 2), keepdim=True), [f(2, 3, 4)]),
    "sum_int": (lambda x: x.sum(0), [i(3, 4)]), "sum_bool": (lambda x: x.sum(), [b(3, 4)]),
    "sum_bf16": (lambda x: x.sum(1), [bf(3, 16)]),
    "mean_dims": (lambda x: x.mean((-1, -2)), [t(f(2, 3, 4))]), "mean_all": (lambda x: x.mean(), [f(5)]),
    "mean_keepdim": (lambda x: x.mean(1, keepdim=True), [f(2, 3)]),
    "prod": (lambda x: x.prod(1), [f(3, 4)]), "prod_all": (lambda x: x.prod(), [f(3)]),
    "amax": (lambda x: x.amax(1), [f(3, 4)]), "amin": (lambda x: x.amin((0, 1), keepdim=True), [f(3, 4)]),
    "max_dim": (lambda x: x.max(-1), [f(3, 5)]), "min_dim": (lambda x: x.min(0, keepdim=True), [f(3, 5)]),
    "max_all": (lambda x: x.max(), [f(3, 5)]), "min_all": (lambda x: x.min(), [i(3, 5)]),
    "argmax": (lambda x: x.argmax(-1), [f(3, 5)]), "argmin": (lambda x: x.argmin(0, keepdim=True), [f(3, 5)]),
    "argmax_all": (lambda x: x.argmax(), [f(3, 5)]),
    "var": (lambda x: x.var(-1), [f(3, 6)]), "var_unbiased_false": (lambda x: x.var(0, unbiased=False), [f(4, 3)]),
    "std": (lambda x: x.std(1, keepdim=True), [f(3, 6)]),
    "var_all": (lambda x: torch.var(x, correction=0), [f(3, 6)]),
    "any_dim": (lambda x: x.any(1), [b(3, 4)]), "any_all": (lambda x: x.any(), [i(4, lo=0, hi=2)]),
    "all_dim": (lambda x: x.all(-1), [b(3, 4)]), "any_dims": (lambda x: x.any((0, 1)), [b(3, 4, 2)]),
    "norm2": (lambda x: torch.linalg.vector_norm(x, dim=-1), [f(3, 4)]),
    "norm1": (lambda x: torch.linalg.vector_norm(x, 1), [f(3, 4)]),
    "norm_inf": (lambda x: torch.linalg.vector_norm(x, float("inf"), dim=0), [f(3, 4)]),
    "norm3": (lambda x: torch.linalg.vector_norm(x, 3, dim=1, keepdim=True), [f(3, 4)]),
    "normalize": (lambda x: F.normalize(x, dim=1), [f(3, 4)]),
    "cdist": (torch.cdist, [f(2, 4, 3), f(2, 5, 3)]),
    "cdist_p1": (lambda a, c: torch.cdist(a, c, p=1), [f(4, 3), f(6, 3)]),
    "cdist_pinf": (lambda a, c: torch.cdist(a, c, p=float("inf")), [f(4, 3), f(2, 3)]),
    "cdist_p3": (lambda a, c: torch.cdist(a, c, p=3), [f(1, 3, 2), f(1, 4, 2)]),
    "pdist": (F.pdist, [f(5, 3)]), "pdist_p1": (lambda a: F.pdist(a, 1), [f(4, 2)]),
    "cumsum": (lambda x: x.cumsum(-1), [f(3, 5)]), "cumsum_int": (lambda x: x.cumsum(0), [i(4, 2)]),
    "cumprod": (lambda x: x.cumprod(1), [f(2, 4)]),
    "sort": (lambda x: torch.sort(x, -1), [f(3, 6)]),
    "sort_desc": (lambda x: torch.sort(x, 0, descending=True), [f(5, 2)]),
    "sort_stable": (lambda x: torch.sort(x, stable=True, descending=True), [i(3, 6, lo=0, hi=3)]),
    "topk": (lambda x: torch.topk(x, 2), [f(3, 6)]), "topk_smallest": (lambda x: torch.topk(x, 3, 0, largest=False), [f(5, 2)]),
}

SHAPE = {
    "view": (lambda x: x.view(6, -1), [f(2, 3, 4)]), "reshape_noncontig": (lambda x: x.reshape(-1), [t(f(3, 4))]),
    "flatten": (lambda x: x.flatten(1), [f(2, 3, 4)]),
    "permute": (lambda x: x.permute(2, 0, 1), [f(2, 3, 4)]), "permute_neg": (lambda x: x.permute(-1, -3, -2), [f(2, 3, 4)]),
    "transpose": (lambda x: x.transpose(0, -1), [f(2, 3, 4)]), "t": (lambda x: x.t(), [f(3, 4)]),
    "expand": (lambda x: x.expand(2, 3, 4), [f(3, 1)]), "expand_neg": (lambda x: x.expand(4, -1), [f(1, 5)]),
    "unsqueeze": (lambda x: x.unsqueeze(-1), [f(2, 3)]), "squeeze": (lambda x: x.squeeze(1), [f(2, 1, 3)]),
    "squeeze_all": (lambda x: x.squeeze(), [f(1, 3, 1)]), "squeeze_dims": (lambda x: x.squeeze((0, 2)), [f(1, 3, 1)]),
    "cat": (lambda x, y: torch.cat([x, y], -1), [f(2, 3), f(2, 2)]),
    "cat_promote": (lambda x, y: torch.cat([x, y]), [i(2, 3), f(1, 3)]),
    "stack": (lambda x, y: torch.stack([x, y], 1), [f(2, 3), f(2, 3)]),
    "split": (lambda x: x.split(2, -1), [f(3, 5)]),
    "split_sizes": (lambda x: x.split([1, 3], 0), [f(4, 2)]),
    "chunk": (lambda x: x.chunk(3, 1), [f(2, 6)]),
    "unbind": (lambda x: x.unbind(1), [f(2, 3)]),
    "slice": (lambda x: x[1:, :-1], [f(4, 5)]), "slice_step": (lambda x: x[::2, 1::3], [f(5, 7)]),
    "slice_neg": (lambda x: x[-3:-1], [f(5, 2)]), "narrow": (lambda x: x.narrow(1, 1, 2), [f(3, 4)]),
    "select": (lambda x: x[:, 1], [f(3, 4)]), "select_neg": (lambda x: x[-1], [f(3, 4)]),
    "pad": (lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), [f(2, 3, 4)]),
    "pad_crop": (lambda x: F.pad(x, (-1, 1)), [f(2, 5)]),
    "flip": (lambda x: x.flip(0, -1), [f(3, 4)]),
    "diagonal": (lambda x: torch.diagonal(x) * 1, [f(3, 4)]),
    "diagonal_offset": (lambda x: torch.diagonal(x, 1, -1, 0) * 1, [f(2, 4, 3)]),
    "diagonal_neg": (lambda x: torch.diagonal(x, -2, 1, 2) * 1, [f(2, 4, 3)]), "roll": (lambda x: x.roll(2, 1), [f(2, 5)]),
    "repeat": (lambda x: x.repeat(2, 1, 3), [f(3, 2)]),
    "clone": (lambda x: x.clone() + 0, [f(3)]), "contiguous": (lambda x: x.contiguous() * 2, [t(f(2, 3))]),
    "to_dtype": (lambda x: x.to(torch.int32), [f(5) * 10]), "to_bf16": (lambda x: x.to(torch.bfloat16), [f(5)]),
    "to_float": (lambda x: x.float(), [i(5)]), "type_as": (lambda x, y: x.type_as(y), [i(4), f(4)]),
}

INDEX = {
    "index_select": (lambda x, idx: x.index_select(1, idx), [f(3, 5), i(4, lo=0, hi=5)]),
    "gather": (lambda x, idx: x.gather(1, idx), [f(3, 5), i(3, 2, lo=0, hi=5)]),
    "gather_small": (lambda x, idx: x.gather(0, idx), [f(4, 5), i(2, 3, lo=0, hi=4)]),
    "index_one": (lambda x, idx: x[idx], [f(5, 3), i(2, 2, lo=-5, hi=5)]),
    "index_middle": (lambda x, idx: x[:, idx], [f(3, 5, 2), i(4, lo=-5, hi=5)]),
    "index_two": (lambda x, r, c: x[r, c], [f(4, 5), i(3, lo=0, hi=4), i(3, lo=0, hi=5)]),
    "index_two_bcast": (lambda x, r, c: x[r, c], [f(4, 5, 2), i(3, 1, lo=0, hi=4), i(2, lo=-5, hi=5)]),
}

def _setitem(x, idx, v):
    y = x.clone()
    y[idx] = v
    return y


def _slice_set(x, v):
    y = x.clone()
    y[:, 1:3] = v
    return y


def _strided_set(x, v):
    y = x.clone()
    y[::2] = v
    return y


SPECTRAL = {
    "rfft_abs": (lambda x: torch.fft.rfft(x).abs(), [f(3, 8)]),
    "rfft_ortho": (lambda x: torch.fft.rfft(x, dim=0, norm="ortho").abs(), [f(6, 2)]),
    "rfft2_forward": (lambda x: torch.fft.rfft2(x, norm="forward").abs(), [f(4, 6)]),
    "fft_real_input": (lambda x: torch.fft.fft(x).abs(), [f(5)]),
    "irfft_roundtrip": (lambda x: torch.fft.irfft(torch.fft.rfft(x), n=8), [f(2, 8)]),
    "irfft2_roundtrip": (lambda x: torch.fft.irfft2(torch.fft.rfft2(x), s=(4, 6)), [f(4, 6)]),
}

SCATTER = {
    "scatter_src": (lambda x, idx, src: x.scatter(1, idx, src), [f(3, 5), torch.tensor([[0, 4], [2, 1], [3, 3]]), f(3, 4)]),
    "scatter_value": (lambda x, idx: x.scatter(0, idx, 9.0), [f(4, 3), torch.tensor([[3, 0, 1]])]),
    "scatter_add": (lambda x, idx, src: x.scatter_add(1, idx, src), [f(2, 4), i(2, 6, lo=0, hi=4), f(2, 6)]),
    "scatter_reduce_amax": (lambda x, idx, src: x.scatter_reduce(0, idx, src, "amax"), [f(4), i(7, lo=0, hi=4), f(7)]),
    "index_put": (lambda x, r, v: _setitem(x, r, v), [f(5, 3), torch.tensor([4, 0]), f(2, 3)]),
    "index_put_2d": (lambda x, r, c, v: _setitem(x, (r, c), v), [f(4, 5), i(3, lo=0, hi=4), i(3, lo=-5, hi=0), f(3)]),
    "index_put_acc": (lambda x, r, v: x.index_put((r,), v, accumulate=True), [f(4, 2), i(6, lo=0, hi=4), f(6, 2)]),
    "masked_setitem": (lambda x, m: _setitem(x, m, -1.0), [f(3, 4), b(3, 4)]),
    "masked_setitem_rows": (lambda x, m: _setitem(x, m, 0.0), [f(3, 4), b(3)]),
    "slice_set": (_slice_set, [f(3, 5), f(3, 2)]),
    "strided_set": (_strided_set, [f(5, 2), f(3, 2)]),
    "select_set": (lambda x, v: _setitem(x, (slice(None), -1), v), [f(3, 4), f(3)]),
}

CREATE = {
    "zeros": (lambda x: x + torch.zeros(3, 4), [f(3, 4)]), "ones": (lambda x: x * torch.ones(4), [f(3, 4)]),
    "full": (lambda x: x + torch.full((2, 1), 2.5), [f(2, 3)]),
    "full_int": (lambda x: x + torch.full((3,), 7), [i(3)]),
    "zeros_like": (lambda x: torch.zeros_like(x) + 1, [f(2, 3)]),
    "ones_like": (lambda x: torch.ones_like(x, dtype=torch.int64), [f(2, 3)]),
    "full_like": (lambda x: torch.full_like(x, 3.0), [f(2, 3)]),
    "empty_like_filled": (lambda x: torch.empty_like(x).fill_(2.0), [f(2, 3)]),
    "fill": (lambda x: x.clone().fill_(2), [i(2, 3)]),
    "new_zeros": (lambda x: x.new_zeros(2, 2) + 1, [f(3)]),
    "new_ones": (lambda x: x.new_ones(3), [f(3)]),
    "new_full": (lambda x: x.new_full((2,), 4.0), [f(3)]),
    "arange": (lambda x: x + torch.arange(4), [f(3, 4)]),
    "arange_start_step": (lambda x: x * torch.arange(1, 10, 2), [f(5)]),
    "arange_float": (lambda x: x + torch.arange(0.5, 2.0, 0.25), [f(6)]),
    "arange_int": (lambda x: x + torch.arange(2, 7), [i(5)]),
    "scalar_tensor": (lambda x: torch.where(x > 0, x, torch.tensor(-1.0)), [f(5)]),
}

aten = torch.ops.aten
# Core ATen overloads that ordinary torch code reaches only in some programs: called directly.
CORE_DIRECT = {
    "add.Scalar": (lambda x: aten.add.Scalar(x, 2), [f(4)]),
    "sub.Scalar": (lambda x: aten.sub.Scalar(x, 2.5, alpha=2), [f(4)]),
    "div.Scalar": (lambda x: aten.div.Scalar(x, 4), [f(4)]),
    "div.Scalar_mode": (lambda x: aten.div.Scalar_mode(x, 4, rounding_mode="floor"), [i(6, lo=-9, hi=9)]),
    "alias": (lambda x: aten.alias.default(x) * 2, [f(3)]),
    "copy": (lambda x, y: aten.copy.default(x, y), [f(2, 3), i(3)]),
    "empty.memory_format": (lambda x: aten.empty.memory_format([2, 3]).fill_(1.5) + x, [f(2, 3)]),
    "empty_strided": (lambda x: aten.empty_strided.default([2, 3], [3, 1]).fill_(2) * x, [f(2, 3)]),
    "native_dropout": (lambda x: aten.native_dropout.default(x, 0.5, False)[0] + 1, [f(4)]),
    "adaptive_avg_pool3d_direct": (lambda x: aten._adaptive_avg_pool3d.default(x, [1, 1, 1]), [f(1, 2, 3, 4, 5)]),
}

RESAMPLE = {
    "upsample_nearest2x": (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), [f(1, 2, 3, 4)]),
    "upsample_nearest_size": (lambda x: F.interpolate(x, size=(5, 7), mode="nearest"), [f(1, 2, 3, 4)]),
    "upsample_nearest_down": (lambda x: F.interpolate(x, scale_factor=0.5, mode="nearest"), [f(1, 1, 6, 5)]),
    "upsample_nearest1d": (lambda x: F.interpolate(x, scale_factor=3, mode="nearest"), [f(1, 2, 4)]),
    "upsample_bilinear": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), [f(1, 2, 3, 4)]),
    "upsample_bilinear_ac": (lambda x: F.interpolate(x, size=(5, 6), mode="bilinear", align_corners=True), [f(1, 2, 3, 4)]),
    "upsample_bilinear_frac": (lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), [f(1, 1, 4, 4)]),
    "upsample_linear1d": (lambda x: F.interpolate(x, size=7, mode="linear"), [f(1, 2, 4)]),
    "reflection_pad2d": (lambda x: F.pad(x, (1, 2, 2, 0), mode="reflect"), [f(1, 2, 4, 5)]),
    "reflection_pad1d": (lambda x: F.pad(x, (3, 1), mode="reflect"), [f(1, 2, 5)]),
    "reflection_pad3d": (lambda x: F.pad(x, (1, 1, 1, 1, 1, 1), mode="reflect"), [f(1, 1, 3, 3, 3)]),
    "replication_pad2d": (lambda x: F.pad(x, (2, 1, 0, 3), mode="replicate"), [f(1, 2, 3, 4)]),
    "replication_pad1d": (lambda x: F.pad(x, (2, 2), mode="replicate"), [f(1, 2, 3)]),
    "replication_pad3d": (lambda x: F.pad(x, (1, 0, 0, 1, 1, 1), mode="replicate"), [f(1, 1, 2, 3, 3)]),
}

GROUPS = {"unary": UNARY, "binary": BINARY, "nn": NN, "reduce": REDUCE, "shape": SHAPE,
          "index": INDEX, "create": CREATE, "core_direct": CORE_DIRECT,
          "resample": RESAMPLE, "scatter": SCATTER, "spectral": SPECTRAL}


class Cases(torch.nn.Module):
    """All cases of a group as one module: flat inputs in, a tuple of every output back."""

    def __init__(self, cases: dict):
        super().__init__()
        self.names = list(cases)
        self.fns = [cases[n][0] for n in self.names]
        self.arity = [len(cases[n][1]) for n in self.names]

    def forward(self, *xs):
        outs, at = [], 0
        for fn, n in zip(self.fns, self.arity):
            y = fn(*xs[at:at + n])
            outs.append(tuple(y) if isinstance(y, (tuple, list)) else y)
            at += n
        return tuple(outs)


def group_inputs(cases: dict) -> tuple:
    return tuple(x for n in cases for x in cases[n][1])
