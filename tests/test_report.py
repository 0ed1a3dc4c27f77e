"""The HTML report renders in a real (headless) browser, and IR dumps read back."""
from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorsmith
from tensorsmith import codegen, ir
from tensorsmith.ir.serialize import weights_path
from tensorsmith.passes import PASSES, register_pass
from tensorsmith.report import dump_ir, layer_metrics, render_report

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO  # noqa: E402

NASTY = "</script><script>document.body.dataset.pwned='1'</script> <b>&amp;"


def _probe(graph, ctx):
    """Zero the smaller half of layer0/w and remark per-layer numbers (report test probe)."""
    w = np.asarray(graph.params["layer0/w"])
    cut = np.median(np.abs(w))
    for name, arr in graph.params.items():
        a = np.asarray(arr)
        ctx.remark("note", NASTY, name, param=name, scale=float(np.max(np.abs(a))),
                   error=float(np.mean(np.abs(a))), bits=8, how="max-abs")
    return graph.with_params({"layer0/w": np.where(np.abs(w) < cut, 0, w).astype(w.dtype)})


if "test-report-probe" not in PASSES:
    register_pass("test-report-probe")(_probe)


@pytest.fixture(scope="module")
def compiled():
    fn, params, args = ZOO["mlp"]()
    return tensorsmith.compile(fn, *args, params=params, passes="inline,test-report-probe,default")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def _browse(tmp_path: Path, *flags: str, page: Path) -> str:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI to render the report (apt-get install chromium)")
        pytest.skip("chromium is not installed (the CI script installs it)")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *flags, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _cells(row_html: str) -> list[str]:
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row_html, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def test_report_is_self_contained_and_escaped(compiled, tmp_path):
    page = compiled.report(tmp_path / "report.html")
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert NASTY not in text  # only ever escaped
    assert text.count("<script") == 2  # the data block and the page script; nothing injected
    assert len(re.findall(r'<details class=irdiff>', text)) == len(compiled.history)


def test_report_renders_in_chromium(compiled, tmp_path):
    page = compiled.report(tmp_path / "report.html")
    dom = _browse(tmp_path, "--dump-dom", "--virtual-time-budget=5000", page=page)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ready="1"' in body, body
    assert "pwned" not in body
    err = re.search(r'<pre id="ts-error"[^>]*>(.*?)</pre>', dom, re.S)
    assert err and err.group(1).strip() == "", err and err.group(1)

    # The script built one row per pass, with the manager's own numbers.
    rows = re.findall(r'<tr class="pass-row" data-pass="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [name for name, _ in rows] == [r.name for r in compiled.history]
    for (name, row), rec in zip(rows, compiled.history):
        cells = _cells(row)
        assert cells[0] == str(rec.index) and cells[1].startswith(name)
        assert cells[3].startswith(f"{rec.before.nodes} \u2192 {rec.after.nodes}")
        assert cells[7].startswith(f"{100 * rec.before.sparsity:.1f}% \u2192 "
                                   f"{100 * rec.after.sparsity:.1f}%")
    probe = compiled.history.find("test-report-probe")
    assert probe.after.sparsity > probe.before.sparsity  # the probe really pruned

    # Per-param sparsity table (static HTML) matches the final weights.
    w = np.asarray(compiled.graph.params["layer0/w"])
    row = re.search(r"<tr><td class=\"name\">@layer0/w</td>(.*?)</tr>", dom, re.S).group(1)
    assert _cells(row)[4] == f"{100 * (1 - np.count_nonzero(w) / w.size):.1f}%"
    # The probe's numeric remark data became a per-layer metrics table without report changes.
    table = layer_metrics(compiled.history)[f"{probe.index:02d} test-report-probe"]
    assert table["columns"] == ["bits", "error", "scale"]
    assert [r["label"] for r in table["rows"]] == list(compiled.source.params)
    assert dom.count("<svg") >= len(compiled.graph.params) + len(compiled.history)


def test_report_screenshot(compiled, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    page = compiled.report(out / "report.html")
    shot = out / "report.png"
    _browse(out, f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars",
            "--virtual-time-budget=5000", page=page)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 1600)
    # Kept as an artifact: $TENSORSMITH_ARTIFACTS or tests/artifacts/ (git-ignored).
    keep = Path(os.environ.get("TENSORSMITH_ARTIFACTS", Path(__file__).parent / "artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "report.png").write_bytes(data)
    (keep / "report.html").write_bytes(Path(page).read_bytes())
    print(f"report screenshot: {keep / 'report.png'}")


def test_render_without_history(compiled):
    fn, params, args = ZOO["mlp"]()
    cm = tensorsmith.compile(fn, *args, params=params, passes=[])
    page = render_report(cm)
    assert "The pipeline is empty." in page and "No pass left remarks." in page


def test_what_has_no_data_is_not_shown():
    fn, params, args = ZOO["mlp"]()
    dense = {k: np.where(np.asarray(v) == 0, 1, v).astype(np.asarray(v).dtype)
             for k, v in jax_leaves_with_names(params).items()}
    cm = tensorsmith.compile(fn, *args, params=_rebuild(params, dense), passes="default")
    assert all(not (np.asarray(a) == 0).any() for a in cm.graph.params.values())
    page = render_report(cm)
    assert "Per-layer metrics" not in page  # no pass attached numbers
    assert "sparsity before" not in page and "No weight has zeros" in page
    assert "<h2>Measured</h2>" not in page  # nothing measured was passed in


def jax_leaves_with_names(tree) -> dict:
    import jax
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _rebuild(tree, by_name: dict):
    import jax
    return jax.tree_util.tree_map_with_path(lambda p, v: by_name[jax.tree_util.keystr(p)], tree)


def test_weights_biggest_first_and_the_tail_folded():
    from tensorsmith.ir import parse
    from tensorsmith.report import WEIGHTS_SHOWN
    n = WEIGHTS_SHOWN + 5
    lines = [f"  param @w{i}: f32[{i + 1}]" for i in range(n)]
    body = [f"  %{i}: f32[{i + 1}] = neg(@w{i})" for i in range(n)]
    text = ("graph @many() {\n" + "\n".join(lines + body) + "\n  return "
            + ", ".join(f"%{i}" for i in range(n)) + "\n}\n")
    g = parse(text, params={f"w{i}": np.ones(i + 1, np.float32) for i in range(n)})
    page = render_report(tensorsmith.compile(g, passes=[]))
    weights = page[page.index("<h2>Weights</h2>"):page.index("<h2>Ops</h2>")]
    names = re.findall(r"<td class=name>@(w\d+)</td>", weights)
    assert names == [f"w{i}" for i in reversed(range(n))]  # by size, biggest first
    shown, folded = weights.split("<details>", 1)
    assert len(re.findall("<td class=name>", shown)) == WEIGHTS_SHOWN
    assert "5 smaller weights" in folded
    # the remarks and diffs come before the weights, so a long table cannot push them away
    assert page.index("<h2>Remarks</h2>") < page.index("<h2>IR diff per pass</h2>") < \
        page.index("<h2>Weights</h2>")


def test_measured_accuracy_and_latency_appear(compiled):
    measured = {"on": "50 held-out samples", "max_abs_error": 1.5e-7,
                "accuracy": {"source": 0.86, "compiled": 0.84},
                "latency": {"baseline": "jax.jit(fn)", "baseline_s": 0.002, "compiled_s": 0.001,
                            "repeats": 30, "backend": "cpu", "batch": 50}}
    page = render_report(compiled, measured)
    table = page[page.index("<h2>Measured</h2>"):]
    table = table[:table.index("</table>")]
    rows = [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    assert rows[1] == ["accuracy on 50 held-out samples", "86.00%", "84.00%", "-2.00 pt"]
    assert rows[2] == ["max |compiled - source| on 50 held-out samples", "", "1.5e-07", ""]
    assert rows[3] == ["latency (batch 50, median of 30 runs, cpu)", "2.000 ms", "1.000 ms",
                       "2.00x faster"]


def test_cli_report_carries_what_the_cli_measured(tmp_path, capsys):
    from tensorsmith import cli
    rc = cli.main(["compile", "--repeats", "2", "-o", str(tmp_path / "d.tsx"),
                   "--report", str(tmp_path / "r.html")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    page = (tmp_path / "r.html").read_text()
    acc = re.search(r"accuracy on 360 held-out samples: source ([\d.]+)%  compiled ([\d.]+)%", out)
    assert f"<td class=num>{acc.group(1)}%</td><td class=num>{acc.group(2)}%</td>" in page
    lat = re.search(r"jax.jit\(fn\) ([\d.]+) ms  compiled ([\d.]+) ms  \(([^)]+)\)", out)
    assert (f"<td class=num>{lat.group(1)} ms</td><td class=num>{lat.group(2)} ms</td>"
            f"<td class=num>{lat.group(3)}</td>") in page


def test_dump_ir_reads_back(compiled, tmp_path):
    # a longer pipeline's dumps from an earlier run are cleared; files tensorsmith did not
    # write stay, even when they look like dumps (issue 15: a user's 2024-results.npz went)
    (tmp_path / "ir").mkdir()
    longer = dataclasses.replace(list(compiled.history)[0], index=9, name="dce")
    dump_ir(compiled.source, [*compiled.history, longer], tmp_path / "ir")
    assert (tmp_path / "ir" / "09-dce.tsir").exists()
    for mine in ("2024-results.npz", "99-notes.tsir", "notes.txt"):
        (tmp_path / "ir" / mine).write_text("mine")
    paths = compiled.dump_ir(tmp_path / "ir")
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == sorted(
        ["2024-results.npz", "99-notes.tsir", "notes.txt", ".tensorsmith-dumps.json"]
        + [p.name for p in paths] + [weights_path(p).name for p in paths])
    names = [p.name for p in paths]
    assert names == ["00-source.tsir"] + [f"{r.index:02d}-{r.name}.tsir" for r in compiled.history]
    graphs = [compiled.source] + [r.graph for r in compiled.history]
    x = ZOO["mlp"]()[2][0]
    for path, graph in zip(paths, graphs):
        loaded = ir.load(path)
        assert loaded.to_text() == graph.to_text()
        np.testing.assert_array_equal(codegen.executor(loaded)(x)[0], codegen.executor(graph)(x)[0])
    np.testing.assert_array_equal(np.asarray(compiled(x)), codegen.executor(ir.load(paths[-1]))(x)[0])
