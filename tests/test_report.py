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
    cm = tensorsmith.compile(fn, *args, params=params)
    page = render_report(cm)
    assert "The pipeline is empty." in page and "No pass left remarks." in page


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
