"""The prune dependency analysis: for every coupling kind, the coupled members are found, and
removing units structurally equals the JAX function run with those units' params zeroed."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import prune_models as pm  # noqa: E402
from zoo import ZOO  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.passes.prune_groups import analyze  # noqa: E402


def _members(unit) -> set[tuple[str, int]]:
    return set(unit.members)


def test_bias_scale_shift_and_next_layer():
    _, an, pruned = pm.check_exact(*pm.dense_chain())
    u = pm.unit_with(an, "l1/w", 1, 3)
    assert {("l1/w", 1), ("l1/b", 0), ("bn/s", 0), ("bn/t", 0), ("l2/w", 0)} <= _members(u)
    assert u.members[("l2/w", 0)].tolist() == [3] and not u.blocked
    assert pruned.params["l1/w"].shape[1] == pruned.params["l2/w"].shape[0] < 16


def test_residual_couples_both_producers_and_every_reader():
    _, an, _ = pm.check_exact(*pm.residual())
    u = pm.unit_with(an, "inp/w", 1, 5)
    # the sum's producers (inp, bproj) and its readers (a, out) share channel 5
    for key in [("inp/b", 0), ("bproj/w", 1), ("bproj/b", 0), ("a/w", 0), ("out/w", 0)]:
        assert u.members[key].tolist() == [5], key


def test_concat_offsets_split_slices_and_a_channel_reduction_blocks_its_part():
    _, an, pruned = pm.check_exact(*pm.concat_split())
    # c2's channel j sits at concat position 4 + j; the split's second piece starts at 4
    u = pm.unit_with(an, "c2/k", 3, 1)
    assert u.members[("c3/k", 2)].tolist() == [5]
    assert u.members[("c5/k", 2)].tolist() == [1]  # b = y[..., 4:] then concat with c4
    assert pm.unit_with(an, "c4/k", 3, 0).members[("c5/k", 2)].tolist() == [6]
    # c1's channels are averaged over (mean over the channel axis of y[..., :4]): blocked
    assert "reduces over it" in pm.unit_with(an, "c1/k", 3, 0).blocked
    assert pruned.params["c1/k"].shape[3] == 4


def test_grouped_and_depthwise_conv():
    _, an, pruned = pm.check_exact(*pm.grouped())
    # grouped conv (2 groups of 4): input channel i goes with i + 4 (both are kernel input i)
    u = pm.unit_with(an, "c0/k", 3, 1)
    assert u.members[("c0/k", 3)].tolist() == [1, 5] and u.members[("g/k", 2)].tolist() == [1]
    # grouped conv output m goes with m + 4; depthwise input c owns outputs 2c, 2c+1
    v = pm.unit_with(an, "g/k", 3, 2)
    assert v.members[("g/k", 3)].tolist() == [2, 6]
    assert v.members[("dw/k", 3)].tolist() == [4, 5, 12, 13]
    dw = next(n for n in pruned.nodes if n.op == "conv" and n.inputs[1].name == "dw/k")
    assert dw.attrs["feature_group_count"] == pruned.params["dw/k"].shape[3] // 2


def test_flatten_nhwc_interleaved_rows():
    fn, params, args = ZOO["cnn"]()
    _, an, _ = pm.check_exact(fn, params, args)
    # NHWC flatten of [2,2,8]: channel c owns rows c, 8 + c, 16 + c, 24 + c of the dense
    u = pm.unit_with(an, "conv1/kernel", 3, 1)
    assert u.members[("head/w", 0)].tolist() == [1, 5, 9, 13, 17, 21, 25, 29]
    assert u.members[("conv1/kernel", 3)].tolist() == [1, 5]  # 2 groups
    assert ("bn1/var", 0) in u.members


def test_flatten_nchw_contiguous_rows():
    _, an, _ = pm.check_exact(*pm.flatten_nchw())
    u = pm.unit_with(an, "c/k", 0, 2)
    assert u.members[("fc/w", 0)].tolist() == list(range(32, 48))


def test_heads_mha_with_transpose_and_softmax():
    fn, params, args = ZOO["transformer_block"]()
    _, an, pruned = pm.check_exact(fn, params, args)
    head = pm.unit_with(an, "attn/wq", 1, 8)
    assert an.groups[head.group].heads
    for key in [("attn/wq", 1), ("attn/wk", 1), ("attn/wv", 1), ("attn/wo", 0)]:
        assert head.members[key].tolist() == list(range(8, 16)), key
    reshapes = [n.attrs["shape"] for n in pruned.nodes if n.op == "reshape"]
    assert (2, 8, 1, 8) in reshapes and (2, 8, 8) in reshapes  # every head count follows


@pytest.mark.parametrize("repeat_kv", [False, True], ids=["grouped-q", "repeated-kv"])
def test_heads_gqa_kv_head_goes_with_all_its_q_heads(repeat_kv):
    fn, params, args = pm.gqa_block(repeat_kv)
    _, an, pruned = pm.check_exact(fn, params, args)
    u = pm.unit_with(an, "attn/wk", 1, 8)  # K/V head 1 (columns 8..15)
    assert u.members[("attn/wk", 1)].tolist() == list(range(8, 16))
    assert u.members[("attn/wv", 1)].tolist() == list(range(8, 16))
    assert u.members[("attn/wq", 1)].tolist() == list(range(16, 32))  # Q heads 2 and 3
    assert u.members[("attn/wo", 0)].tolist() == list(range(16, 32))
    g = an.groups[u.group]
    assert g.heads and len(g.units) == 2
    assert pruned.params["attn/wq"].shape[1] == 2 * pruned.params["attn/wk"].shape[1]


def test_blocked_reasons():
    fn, params, args = ZOO["transformer_block"]()
    an = analyze(tensorsmith.trace(fn, *args, params=params))
    resid = pm.unit_with(an, "attn/wo", 1, 0)
    assert "reduces over it" in resid.blocked or "graph" in resid.blocked
    fn, params, args = ZOO["mlp"]()
    an = analyze(tensorsmith.trace(fn, *args, params=params))
    assert "graph output" in pm.unit_with(an, "out/w", 1, 0).blocked


def test_shared_weight_is_left_alone():
    import jax
    r = np.random.default_rng(0)
    p = {"w": pm._w(r, 8, 8), "o": pm._w(r, 8, 2)}

    def fn(p, x):
        return jax.nn.relu(jax.nn.relu(x @ p["w"]) @ p["w"]) @ p["o"]
    an = analyze(tensorsmith.trace(fn, r.standard_normal((2, 8)).astype(np.float32), params=p))
    assert "shared weight @w" in pm.unit_with(an, "w", 1, 0).blocked


def test_onnx_resnet_groups():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
    import models
    from tensorsmith.frontends.onnx import import_onnx
    an = analyze(import_onnx(models.resnet_cnn(batch=2)))
    # the first residual stage: stem, layer1.1 and the readers of both adds are one group
    u = pm.unit_with(an, "stem.conv.weight", 0, 3)
    for key in [("layer1.1.conv.weight", 0), ("layer1.0.conv.weight", 1), ("stem.bn.running_var", 0),
                ("layer2.0.conv.weight", 1), ("layer2.downsample.conv.weight", 1)]:
        assert u.members[key].tolist() == [3], key
    v = pm.unit_with(an, "layer2.1.conv.weight", 0, 7)
    assert v.members[("layer2.downsample.conv.weight", 0)].tolist() == [7]
    assert v.members[("fc.weight", 1)].tolist() == [7] and not v.blocked


@pytest.mark.parametrize("name", ["cnn", "digits"])
def test_channel_pruning_after_folding_and_fusion_equals_the_masked_model(name):
    fn, params, args = ZOO[name]()
    an = analyze(tensorsmith.trace(fn, *args, params=params))
    rm = pm.pick_units(an, 0.5, seed=1)  # half of every free group (even sizes)
    from tensorsmith.passes.prune_groups import zero_units
    masked = pm.with_params(params, dict(zero_units(an.graph, an, rm).params))
    cm = tensorsmith.compile(fn, *args, params=masked,
                             passes="fold-batchnorm,fuse,prune{pattern=channel,sparsity=0.5},default")
    assert any(n.op == "composite" and n.attrs["name"].startswith("fused") for n in cm.graph.nodes)
    np.testing.assert_allclose(np.asarray(cm(*args)), np.asarray(fn(masked, *args)), rtol=1e-5,
                               atol=1e-5)
    removed = sum(dict(r.data)["before"] - dict(r.data)["after"]
                  for r in cm.history.find("prune").remarks if r.kind == "applied")
    assert removed == len(rm)


def test_ops_that_mix_channels_block_with_the_op_named():
    import jax
    import jax.numpy as jnp
    r = np.random.default_rng(0)
    p = {k: pm._w(r, 8, 16) for k in "abcd"}
    p.update({f"o{k}": pm._w(r, 16, 2) for k in "abcd"})

    def fn(p, x):
        ys = [jnp.sort(jax.nn.relu(x @ p["a"]), axis=1),            # a sort along the channels
              jnp.cumsum(x @ p["b"], axis=1),                        # a scan along them
              jax.nn.softmax(x @ p["c"], axis=1),                    # a softmax over them
              jax.lax.top_k(x @ p["d"], 16)[0]]                      # an op the analysis lacks
        return sum(y @ p[f"o{k}"] for y, k in zip(ys, "abcd"))
    an = analyze(tensorsmith.trace(fn, r.standard_normal((2, 8)).astype(np.float32), params=p))
    why = {k: pm.unit_with(an, k, 1, 0).blocked for k in "abcd"}
    assert why["a"].startswith("sort %") and "works along it" in why["a"]
    assert why["b"].startswith("cumsum %") and "works along it" in why["b"]
    assert why["c"].startswith("reduce_max %") and "reduces over it" in why["c"]  # in the softmax
    assert why["d"].startswith("top_k %") and "not known to keep channels apart" in why["d"]


def test_reverse_squeeze_and_expand_dims_follow_the_channels():
    import jax
    import jax.numpy as jnp
    r = np.random.default_rng(1)
    p = {"a": pm._w(r, 8, 12), "b": pm._w(r, 12, 3)}

    def fn(p, x):
        h = jnp.flip(jax.nn.relu(x @ p["a"]), axis=1)[:, None, :]   # rev, then expand_dims
        return jnp.squeeze(h, 1) @ p["b"]                            # squeeze
    _, an, _ = pm.check_exact(fn, p, (r.standard_normal((3, 8)).astype(np.float32),))
    assert pm.unit_with(an, "a", 1, 2).members[("b", 0)].tolist() == [9]
