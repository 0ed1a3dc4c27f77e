"""The rewrite driver reaches into composite bodies when asked (regions=True)."""
import numpy as np

from tensorsmith import codegen, ir
from tensorsmith.passes import apply_patterns, pattern

SRC = """graph @g(%x: f32[4]) {
  %3: f32[4] = composite(%x) {name="jax.nn.relu"} {
    ^jax.nn.relu(%0: f32[4]):
      %1: f32[] = constant() {dtype="f32", value=0.0}
      %2: f32[4] = max(%0, %1)
      return %2
  }
  return %3
}
"""


@pattern("max-zero", ops="max")
def max_zero(rw, node):
    if rw.constant_value(node.inputs[1]) == 0.0:
        return rw.replace(node, rw.op("relu", node.inputs[0]))
    return None


def test_patterns_rewrite_region_bodies_only_when_asked():
    g = ir.parse(SRC)
    assert apply_patterns(g, [max_zero]).to_text() == SRC
    out = apply_patterns(g, [max_zero], regions=True)
    ir.verify(out)
    body = out.nodes[0].body
    assert [n.op for n in body.nodes] == ["relu"], out.to_text()
    x = np.array([-1.0, 0.5, -2.0, 3.0], np.float32)
    np.testing.assert_array_equal(codegen.executor(out)(x)[0], np.maximum(x, 0))


def test_canonicalize_reaches_into_composite_bodies():
    from tensorsmith.passes import run_pipeline
    out, hist = run_pipeline(ir.parse(SRC), "canonicalize")
    body = out.nodes[0].body
    assert out.nodes[0].attrs["name"] == "jax.nn.relu"  # the composite stays, its body is simpler
    assert [n.op for n in body.nodes] == ["relu"], out.to_text()
    assert any("relu" in r.message for r in hist[0].remarks)
