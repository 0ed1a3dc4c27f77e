"""Whole ONNX models written the way exporters write them, for end-to-end frontend tests.

Each builder returns an ``onnx.ModelProto`` that passes ``onnx.checker.check_model(full_check=
True)``; weights come from fixed numpy seeds, so every call builds the same model. Each builder
also has a ``*_inputs(batch, seed)`` companion that draws fresh random inputs by graph input name.

- ``resnet_cnn``: ResNet-style CNN, NCHW, BatchNormalization kept as its own op (not folded,
  as ``torch.onnx.export(training=TrainingMode.PRESERVE)`` or tf2onnx leave it).
- ``bert_encoder_layer``: one BERT encoder layer as ``torch.onnx.export`` writes it: head
  split through ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, additive mask, erf gelu
  (opset 17) or the ``Gelu`` op (opset 20).
- ``mlp_dynamic``: three dense layers (Gemm and MatMul+Add forms) with Relu/Tanh/Sigmoid.

Import by path: ``sys.path.insert(0, "<repo>/tests/onnx"); import models``.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

__all__ = ["MODELS", "bert_encoder_layer", "bert_inputs", "mlp_dynamic", "mlp_inputs",
           "resnet_cnn", "resnet_inputs"]

# the ONNX IR version each opset first needs (onnx.helper.VERSION_TABLE), so older runtimes load it
_IR_FOR_OPSET = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


class _Graph:
    """Collects nodes and initializers; names each node after its output, as exporters do."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def node(self, op: str, inputs, output: str, **attrs) -> str:
        self.nodes.append(h.make_node(op, list(inputs), [output], name=f"/{output}/{op}", **attrs))
        return output

    def init(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, *shape: int, fan_in: int | None = None) -> str:
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        w = self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        return self.init(name, w.astype(np.float32))

    def small(self, name: str, *shape: int, scale: float = 0.1) -> str:
        return self.init(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def const(self, name: str, array) -> str:
        """A ``Constant`` node (exporters emit these for literals in the forward code)."""
        tensor = numpy_helper.from_array(np.asarray(array), name)
        self.nodes.append(h.make_node("Constant", [], [name], name=f"/{name}/Constant", value=tensor))
        return name

    def model(self, name: str, inputs, outputs, opset: int) -> onnx.ModelProto:
        g = h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)],
                         producer_name="tensorsmith-tests", producer_version="1")
        m.ir_version = _IR_FOR_OPSET[opset]
        onnx.checker.check_model(m, full_check=True)
        return m


# --------------------------------------------------------------------------- resnet
def _conv_bn(g: _Graph, x: str, prefix: str, cin: int, cout: int, k: int, stride: int,
             relu: bool) -> str:
    w = g.weight(f"{prefix}.conv.weight", cout, cin, k, k)
    y = g.node("Conv", [x, w], f"{prefix}.conv", kernel_shape=[k, k], strides=[stride, stride],
               pads=[k // 2] * 4, dilations=[1, 1], group=1)
    scale = g.init(f"{prefix}.bn.weight", (1.0 + g.rng.standard_normal(cout) * 0.1).astype(np.float32))
    bias = g.small(f"{prefix}.bn.bias", cout)
    mean = g.small(f"{prefix}.bn.running_mean", cout)
    var = g.init(f"{prefix}.bn.running_var", g.rng.uniform(0.5, 1.5, cout).astype(np.float32))
    y = g.node("BatchNormalization", [y, scale, bias, mean, var], f"{prefix}.bn",
               epsilon=1e-5, momentum=0.9)
    return g.node("Relu", [y], f"{prefix}.relu") if relu else y


def _basic_block(g: _Graph, x: str, prefix: str, cin: int, cout: int, stride: int) -> str:
    y = _conv_bn(g, x, f"{prefix}.0", cin, cout, 3, stride, relu=True)
    y = _conv_bn(g, y, f"{prefix}.1", cout, cout, 3, 1, relu=False)
    skip = x
    if stride != 1 or cin != cout:  # torchvision's downsample: 1x1 conv (stride) + BN
        skip = _conv_bn(g, x, f"{prefix}.downsample", cin, cout, 1, stride, relu=False)
    y = g.node("Add", [y, skip], f"{prefix}.add")
    return g.node("Relu", [y], f"{prefix}.out")


def resnet_cnn(batch: str | int = "N", classes: int = 10, opset: int = 17) -> onnx.ModelProto:
    """ResNet-style CNN: stem conv-BN-relu, two basic blocks (the second strided with a 1x1
    projection skip), global average pool, flatten, Gemm; ``image: f32[batch,3,32,32]``."""
    g = _Graph(seed=11)
    x = _conv_bn(g, "image", "stem", 3, 16, 3, 1, relu=True)
    x = _basic_block(g, x, "layer1", 16, 16, stride=1)
    x = _basic_block(g, x, "layer2", 16, 32, stride=2)
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    w = g.weight("fc.weight", classes, 32)
    b = g.small("fc.bias", classes)
    g.node("Gemm", [x, w, b], "logits", alpha=1.0, beta=1.0, transB=1)
    return g.model("resnet_cnn", [h.make_tensor_value_info("image", T.FLOAT, [batch, 3, 32, 32])],
                   [h.make_tensor_value_info("logits", T.FLOAT, [batch, classes])], opset)


def resnet_inputs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A fresh random image batch for ``resnet_cnn``."""
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}


# --------------------------------------------------------------------------- bert
def _dense(g: _Graph, x: str, prefix: str, din: int, dout: int) -> str:
    # torch exports nn.Linear on a 3-D input as MatMul by the transposed weight + Add
    w = g.weight(f"{prefix}.weight_t", din, dout, fan_in=din)
    b = g.small(f"{prefix}.bias", dout, scale=0.02)
    y = g.node("MatMul", [x, w], f"{prefix}.matmul")
    return g.node("Add", [y, b], f"{prefix}.out")


def _layer_norm(g: _Graph, x: str, prefix: str, hidden: int) -> str:
    scale = g.init(f"{prefix}.weight", (1.0 + g.rng.standard_normal(hidden) * 0.05).astype(np.float32))
    bias = g.small(f"{prefix}.bias", hidden, scale=0.02)
    return g.node("LayerNormalization", [x, scale, bias], f"{prefix}.out", axis=-1, epsilon=1e-12)


def _erf_gelu(g: _Graph, x: str, prefix: str) -> str:
    # what torch.onnx writes for F.gelu before opset 20: x * 0.5 * (1 + erf(x / sqrt 2))
    y = g.node("Div", [x, g.const(f"{prefix}.sqrt2", np.float32(math.sqrt(2.0)))], f"{prefix}.div")
    y = g.node("Erf", [y], f"{prefix}.erf")
    y = g.node("Add", [y, g.const(f"{prefix}.one", np.float32(1.0))], f"{prefix}.add")
    y = g.node("Mul", [x, y], f"{prefix}.mul")
    return g.node("Mul", [y, g.const(f"{prefix}.half", np.float32(0.5))], f"{prefix}.out")


def bert_encoder_layer(batch: str | int = "B", seq: int = 16, hidden: int = 64, heads: int = 4,
                       gelu: str = "erf", opset: int | None = None) -> onnx.ModelProto:
    """One post-LN BERT encoder layer; ``hidden: f32[batch,seq,hidden]``, additive
    ``mask: f32[batch,1,1,seq]`` (0 keeps a position, -10000 drops it).

    ``gelu="erf"`` writes the erf formula (opset 17 by default), ``gelu="op"`` the ``Gelu``
    op (opset 20 by default).
    """
    if gelu not in ("erf", "op"):
        raise ValueError(f"gelu must be 'erf' or 'op', got {gelu!r}")
    opset = opset or (17 if gelu == "erf" else 20)
    d = hidden // heads
    g = _Graph(seed=23)
    x = "hidden"

    # the per-head shape [b, s, heads, d], as torch traces x.size(0), x.size(1)
    shape = g.node("Shape", [x], "attn.shape")
    dims = []
    for i, name in enumerate(("b", "s")):
        idx = g.const(f"attn.{name}_index", np.int64(i))
        dim = g.node("Gather", [shape, idx], f"attn.{name}", axis=0)
        dims.append(g.node("Unsqueeze", [dim, g.const(f"attn.{name}_axes", np.array([0], np.int64))],
                           f"attn.{name}_1d"))
    head_shape = g.node("Concat", [*dims, g.const("attn.heads", np.array([heads], np.int64)),
                                   g.const("attn.head_dim", np.array([d], np.int64))],
                        "attn.head_shape", axis=0)

    def split_heads(name: str, perm) -> str:
        y = _dense(g, x, f"attn.{name}", hidden, hidden)
        y = g.node("Reshape", [y, head_shape], f"attn.{name}.heads")
        return g.node("Transpose", [y], f"attn.{name}.t", perm=list(perm))

    q = split_heads("query", (0, 2, 1, 3))   # [b, h, s, d]
    k = split_heads("key", (0, 2, 3, 1))     # [b, h, d, s]: torch's k.transpose(-1, -2) folded in
    v = split_heads("value", (0, 2, 1, 3))
    scores = g.node("MatMul", [q, k], "attn.scores")
    scores = g.node("Div", [scores, g.const("attn.scale", np.float32(math.sqrt(d)))], "attn.scaled")
    scores = g.node("Add", [scores, "mask"], "attn.masked")
    probs = g.node("Softmax", [scores], "attn.probs", axis=-1)
    ctx = g.node("MatMul", [probs, v], "attn.context")
    ctx = g.node("Transpose", [ctx], "attn.context.t", perm=[0, 2, 1, 3])
    # merge heads with 0 (copy the dim) / -1 (infer) as HF's view(*x.size()[:-2], -1) exports
    ctx = g.node("Reshape", [ctx, g.const("attn.merge_shape", np.array([0, 0, -1], np.int64))],
                 "attn.merged")
    attn = _dense(g, ctx, "attn.output", hidden, hidden)
    y = g.node("Add", [attn, x], "attn.residual")
    y = _layer_norm(g, y, "attn.layer_norm", hidden)

    ff = _dense(g, y, "ffn.intermediate", hidden, 4 * hidden)
    ff = (_erf_gelu(g, ff, "ffn.gelu") if gelu == "erf"
          else g.node("Gelu", [ff], "ffn.gelu", approximate="none"))
    ff = _dense(g, ff, "ffn.output", 4 * hidden, hidden)
    out = g.node("Add", [ff, y], "ffn.residual")
    g.nodes.append(h.make_node("LayerNormalization",
                               [out, g.init("ffn.layer_norm.weight", np.ones(hidden, np.float32)),
                                g.small("ffn.layer_norm.bias", hidden, scale=0.02)],
                               ["output"], name="/output/LayerNormalization", axis=-1,
                               epsilon=1e-12))
    return g.model("bert_encoder_layer",
                   [h.make_tensor_value_info("hidden", T.FLOAT, [batch, seq, hidden]),
                    h.make_tensor_value_info("mask", T.FLOAT, [batch, 1, 1, seq])],
                   [h.make_tensor_value_info("output", T.FLOAT, [batch, seq, hidden])], opset)


def bert_inputs(batch: int, seq: int = 16, hidden: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Random hidden states and an additive padding mask (each row keeps a random prefix)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, seq + 1, batch)
    keep = np.arange(seq)[None, :] < lengths[:, None]
    mask = np.where(keep, 0.0, -10000.0).astype(np.float32).reshape(batch, 1, 1, seq)
    return {"hidden": rng.standard_normal((batch, seq, hidden)).astype(np.float32), "mask": mask}


# --------------------------------------------------------------------------- mlp
def mlp_dynamic(batch: str | int = "batch", features: int = 32, width: int = 64, out: int = 8,
                opset: int = 21) -> onnx.ModelProto:
    """Gemm -> Relu -> MatMul+Add -> Tanh -> Gemm -> Sigmoid; ``x: f32[batch,features]``."""
    g = _Graph(seed=5)
    y = g.node("Gemm", ["x", g.weight("fc1.weight", width, features), g.small("fc1.bias", width)],
               "fc1", transB=1)
    y = g.node("Relu", [y], "relu1")
    y = g.node("MatMul", [y, g.weight("fc2.weight_t", width, width, fan_in=width)], "fc2.matmul")
    y = g.node("Add", [y, g.small("fc2.bias", width)], "fc2")
    y = g.node("Tanh", [y], "tanh2")
    y = g.node("Gemm", [y, g.weight("fc3.weight", out, width), g.small("fc3.bias", out)], "fc3",
               transB=1)
    g.node("Sigmoid", [y], "probs")
    return g.model("mlp_dynamic", [h.make_tensor_value_info("x", T.FLOAT, [batch, features])],
                   [h.make_tensor_value_info("probs", T.FLOAT, [batch, out])], opset)


def mlp_inputs(batch: int, features: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """A fresh random batch for ``mlp_dynamic``."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, features)).astype(np.float32)}


# name -> (builder, inputs(batch, seed)); builders take their defaults (symbolic batch)
MODELS = {
    "resnet_cnn": (resnet_cnn, resnet_inputs),
    "bert_encoder_layer": (bert_encoder_layer, bert_inputs),
    "bert_encoder_layer_gelu_op": (lambda: bert_encoder_layer(gelu="op"), bert_inputs),
    "mlp_dynamic": (mlp_dynamic, mlp_inputs),
}
