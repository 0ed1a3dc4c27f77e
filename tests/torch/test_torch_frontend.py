"""The PyTorch frontend: names, locations, dynamic dims, eval semantics, no mutation, errors,
and the downstream tools (passes, report, bisect, export, CLI) on torch-imported graphs.

Oracle: the torch module itself, run eagerly in eval mode.
"""
from __future__ import annotations

import re
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tensorsmith
from tensorsmith import cli
from tensorsmith.errors import CallError, ModelImportError
from tensorsmith.frontends.torch import TorchImportError, UnsupportedOpsError, import_torch

torch = pytest.importorskip("torch")
nn = torch.nn
Dim = torch.export.Dim

warnings.filterwarnings("ignore", category=FutureWarning)


class SmallNet(nn.Module):
    """Conv/BN/ReLU features in a Sequential, dropout and a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, stride=2, bias=False),
                                      nn.BatchNorm2d(8), nn.Hardtanh(0, 6))
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.features(x).mean((2, 3))
        return self.head(self.drop(y)).log_softmax(-1)


def small_net(train: bool = True) -> SmallNet:
    torch.manual_seed(0)
    m = SmallNet()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 1.5)
    return m.train(train)


def eager(module, *args):
    """The module's eval-mode output, leaving its training flags as they were."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        with torch.no_grad():
            return module.eval()(*args)
    finally:
        for m, f in flags:
            m.training = f


def close(out, ref, tol=1e-5):
    out, ref = np.asarray(out, np.float64), ref.detach().double().numpy()
    err = np.max(np.abs(out - ref))
    assert err <= tol * max(1.0, np.max(np.abs(ref))), f"max abs error {err:.3g}"


def test_params_are_state_dict_keys_and_locations_name_the_module():
    m = small_net()
    g = import_torch(m, torch.randn(1, 3, 12, 12)).graph
    assert set(g.params) == set(m.state_dict())
    conv = next(n for n in g.nodes if n.op == "conv")
    assert [v.name for v in conv.inputs] == ["x", "features.0.weight"]
    # the module path, then the user's source line (the call inside forward, not torch's code)
    assert re.fullmatch(r"features\.0 \(test_torch_frontend\.py:\d+ \(forward\)\)", conv.loc), conv.loc
    assert next(n for n in g.nodes if n.op == "dot_general").loc.startswith("head (")
    bn = [n for n in g.nodes if n.op == "batch_norm"]
    assert [n.inputs[3].name for n in bn] == ["features.1.running_mean", "features.5.running_mean"]


def test_dynamic_batch_stays_symbolic_with_its_range():
    m = small_net()
    cm = tensorsmith.compile(m, torch.randn(2, 3, 12, 12), passes="none",
                             dynamic_shapes=({0: Dim("batch", min=1, max=8)},))
    assert str(cm.source.inputs[0].type) == "f32[batch,3,12,12]"
    assert str(cm.source.outputs[0].type) == "f32[batch,5]"
    assert [str(r) for r in cm.source.requires] == ["batch <= 8"]
    assert "requires batch <= 8" in cm.source.to_text()
    for b in (1, 3, 8):
        x = torch.randn(b, 3, 12, 12)
        close(cm(x.numpy()), eager(m, x))
    with pytest.raises(CallError, match="batch <= 8"):
        cm(np.zeros((9, 3, 12, 12), np.float32))
    assert cm.cache_info().pipeline_runs == 1  # one import and pipeline for every batch size


class SizeArith(nn.Module):
    """Sizes used as shapes and as values: view(B*T, -1), arange(T), division by T."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        b, t, c = x.shape
        y = self.proj(x.reshape(b * t, c)).view(b, t, c)
        pos = torch.arange(t, dtype=torch.float32).unsqueeze(-1)
        return y.sum(1) / t + (y * pos)[:, 1:].mean(1), torch.full((b, 1), t * 2.0)


def test_symbolic_sizes_become_dim_expressions():
    m = SizeArith()
    T = Dim("T", min=3, max=40)
    cm = tensorsmith.compile(m, torch.randn(2, 5, 4), passes="none",
                             dynamic_shapes=({0: Dim("B", max=16), 1: T},))
    text = cm.source.to_text()
    assert "%x: f32[B,T,4]" in text and 'reshape(%x) {shape=("B*T", 4)}' in text
    assert "requires T >= 3" in text and "T <= 40" in text
    for shape in [(1, 3, 4), (3, 7, 4), (2, 40, 4)]:
        x = torch.randn(*shape)
        out, ref = cm(x.numpy()), eager(m, x)
        assert isinstance(out, tuple) and len(out) == 2
        close(out[0], ref[0])
        close(out[1], ref[1])


def test_eval_semantics_and_nothing_of_the_user_is_mutated():
    m = small_net(train=True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 3, 12, 12)
    x_before = x.clone()
    cm = tensorsmith.compile(m, x)
    # dropout off and running statistics used: the eval-mode output, deterministic
    close(cm(x.numpy()), eager(m, x))
    np.testing.assert_array_equal(np.asarray(cm(x.numpy())), np.asarray(cm(x.numpy())))
    assert all(mod.training for mod in m.modules())
    assert torch.equal(x, x_before)
    after = m.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # the graph's params are copies: changing the module later does not change the compiled model
    ref = eager(m, x)
    with torch.no_grad():
        m.head.weight.add_(1.0)
    close(cm(x.numpy()), ref)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(10, 3, mode="mean")
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(self.bag(torch.tensor([[1, 2], [3, 4]])).t()[None, :, :, None])
        # ^ the conv reads an unsupported op's output: it is not listed itself
        z = self.conv(x)
        grid = torch.nn.functional.grid_sample(z, torch.zeros(1, 2, 2, 2), align_corners=False)
        return y, grid, z.masked_scatter(z > 0, torch.ones(48))


def test_every_unsupported_op_is_listed_at_once_with_its_module():
    with pytest.raises(UnsupportedOpsError) as info:
        import_torch(Unsupported(), torch.randn(1, 3, 4, 4))
    msg = str(info.value)
    assert isinstance(info.value, ModelImportError)
    assert "Unsupported: 3 nodes cannot be converted" in msg
    assert re.search(r"aten\._embedding_bag\.default at bag \(test_torch_frontend\.py:\d+", msg), msg
    assert re.search(r"aten\.masked_scatter\.default at test_torch_frontend\.py:\d+", msg), msg
    assert "convolution" not in msg
    assert re.search(r"aten\.grid_sampler_2d\.default at test_torch_frontend\.py:\d+ \(forward\)", msg), msg


def test_export_failure_names_the_model():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x[x > 0]
    with pytest.raises(TorchImportError, match="DataDependent"):
        import_torch(DataDependent(), torch.randn(5), dynamic_shapes=({0: Dim("n")},))


def test_missing_torch_says_how_to_install(monkeypatch):
    from tensorsmith.frontends import torch as frontend
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(TorchImportError, match=r'pip install -e "\.\[torch\]"'):
        frontend.require_torch()


def test_downstream_passes_report_bisect_export(tmp_path):
    m = small_net()
    x = torch.randn(2, 3, 12, 12)
    cm = tensorsmith.compile(m, x)  # the default pipeline
    assert [r.name for r in cm.history][:1] == ["canonicalize"]
    close(cm(x.numpy()), eager(m, x))
    report = cm.report(tmp_path / "report.html")
    assert "features.0.weight" in report.read_text()
    path = cm.export(tmp_path / "small.tsx", x.numpy())
    close(tensorsmith.load(path)(x.numpy()), eager(m, x))
    from tensorsmith.bisection import bisect
    result = bisect(m, x.numpy(), passes="canonicalize,cse,dce")
    assert result.worst is None or result.worst.error < 1e-5


USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 3))
        self.example_inputs = (torch.randn(4, 6),)
        self.dynamic_shapes = ({0: torch.export.Dim("rows", max=32)},)

    def forward(self, x):
        return self.body(x)


net = Net()
'''


def test_cli_takes_an_nn_module(capsys, tmp_path, monkeypatch):
    (tmp_path / "tsm_torch_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "tsm_torch_models", raising=False)
    rc = cli.main(["inspect", "tsm_torch_models:net"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "graph @Net(%x: f32[rows,6])" in out
    for key in ("body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"):
        assert f"@{key}" in out
    rc = cli.main(["compile", "tsm_torch_models:net", "--repeats", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "max |compiled - source|" in out


def test_an_exported_program_is_a_model_too():
    m = small_net(train=False)
    x = torch.randn(3, 3, 12, 12)
    spec = ({0: Dim("n", max=4)},)
    program = torch.export.export(m, (x,), dynamic_shapes=spec)
    unnamed = import_torch(program, x).graph.inputs[0].type.shape[0]
    assert re.fullmatch(r"s\d+", str(unnamed))  # torch's own symbol name...
    cm = tensorsmith.compile(program, x.numpy(), passes="none", dynamic_shapes=spec)
    assert str(cm.source.inputs[0].type) == "f32[n,3,12,12]"  # ...or the one the spec gives
    assert set(cm.source.params) == set(m.state_dict())
    for b in (1, 4):
        x = torch.randn(b, 3, 12, 12)
        close(cm(x.numpy()), eager(m, x))


def test_torch_is_imported_only_for_torch_models():
    import subprocess
    code = ("import sys, numpy as np, tensorsmith\n"
            "tensorsmith.compile(lambda x: x * 2, np.ones(3, np.float32), passes='none')\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
