"""Real exports by ``torch.onnx.export(..., dynamo=False, dynamic_axes=...)``: each imports
symbolically (one import, no specialization) and, compiled once, matches torch eager and
onnxruntime at three shapes."""
from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

import tensorsmith

import torch  # the test extra pins the CPU build


class SmallCNN(torch.nn.Module):
    """Strided conv, batch norm, a residual block, max pool, adaptive average pool, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        y = y + torch.relu(self.c2(y))
        y = torch.nn.functional.adaptive_avg_pool2d(self.pool(y), 1).flatten(1)
        return self.fc(y)


class Recurrent(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(6, 10, batch_first=True)
        self.fc = torch.nn.Linear(10, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


class EncoderLayer(torch.nn.Module):
    """A pre-LN-free transformer encoder layer with causal self-attention, written out.

    (``torch.nn.TransformerEncoderLayer`` itself exports with the example's sequence length
    baked into its attention Reshapes, so onnxruntime refuses other lengths too.)
    """

    def __init__(self, d=16, heads=4, ff=32):
        super().__init__()
        self.qkv, self.o = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.f1, self.f2 = torch.nn.Linear(d, ff), torch.nn.Linear(ff, d)
        self.heads = heads

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (t.reshape(b, s, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, -1))
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        att = ((q @ k.transpose(-1, -2)) / (d // self.heads) ** 0.5).masked_fill(~causal, -1e9)
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = self.n1(x + self.o(y))
        return self.n2(x + self.f2(torch.relu(self.f1(x))))


CASES = {
    "cnn": (SmallCNN, (2, 3, 32, 32), {0: "N", 2: "H", 3: "W"},
            [(1, 3, 32, 32), (2, 3, 45, 29), (3, 3, 64, 17)]),
    "gru": (lambda: Recurrent("GRU"), (2, 7, 6), {0: "B", 1: "T"}, [(1, 5, 6), (2, 11, 6), (3, 2, 6)]),
    "lstm": (lambda: Recurrent("LSTM"), (2, 7, 6), {0: "B", 1: "T"}, [(1, 5, 6), (2, 11, 6), (3, 2, 6)]),
    "encoder": (EncoderLayer, (2, 7, 16), {0: "B", 1: "S"}, [(1, 5, 16), (2, 11, 16), (3, 2, 16)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_exported_model_compiles_once_and_matches_torch(name, tmp_path):
    make, example, axes, shapes = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(*example),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes, "y": {0: axes[0]}},
                          opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(str(path))
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = np.asarray(cm(x)[0])
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], atol=1e-5, rtol=1e-4)
    info = cm.cache_info()
    assert info.specializations == 0 and info.compiles == 3 and cm.symbolic
    # the input keeps the exported names for its dynamic axes
    dims = [axes.get(i, n) for i, n in enumerate(example)]
    assert str(cm.graph.inputs[0].type) == f"f32[{','.join(map(str, dims))}]"
