"""Inspection artifacts of a compile: a self-contained HTML report and per-pass IR dumps."""
from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from pathlib import Path

from .ir import Graph, dtype_name, graph_stats
from .errors import UsageFailure
from .ir.serialize import atomic_write, save, weights_path
from .passes import PASSES

__all__ = ["dump_ir", "layer_metrics", "report_data", "render_report", "write_report"]

MAX_REMARKS = 400  # per pass in the report; the rest are counted, not listed


# --- IR dumps ---------------------------------------------------------------------------
_DUMP_NAME = re.compile(r"\d{2,}-[\w.-]+\.(tsir|npz)")


MANIFEST = ".tensorsmith-dumps.json"  # the dumps tensorsmith wrote in this folder


class DumpConflictError(UsageFailure, FileExistsError):
    """A dump would overwrite a file that tensorsmith did not write."""


def _manifest(directory: Path) -> set[str]:
    """Names of the dumps an earlier run wrote here (only plain dump names are trusted)."""
    try:
        data = json.loads((directory / MANIFEST).read_text("utf-8"))
        names = data.get("files", []) if isinstance(data, dict) else []
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str) and _DUMP_NAME.fullmatch(n)}


def dump_ir(source: Graph, history, directory) -> list[Path]:
    """Write ``00-source.tsir``, ``01-<pass>.tsir``, ... (weights beside each) into ``directory``.

    The folder's manifest (``.tensorsmith-dumps.json``) lists what tensorsmith wrote there:
    dumps an earlier run wrote and this one did not (``07-dce.tsir`` from a longer pipeline)
    are removed, so the folder shows one run only. A file tensorsmith did not write is never
    removed nor overwritten: a dump name that is taken by one is an error.
    """
    directory = Path(directory)
    ours = _manifest(directory)
    targets = [(source, directory / "00-source.tsir")]
    targets += [(rec.graph, directory / f"{rec.index:02d}-{rec.name}.tsir") for rec in history]
    names = [n for _, p in targets for n in (p.name, weights_path(p).name)]
    taken = [n for n in names if n not in ours and (directory / n).exists()]
    if taken:
        raise DumpConflictError(f"IR dumps into {str(directory)!r} would overwrite "
                                f"{', '.join(taken)}, which tensorsmith did not write there; "
                                "move them or dump into another folder")
    # The manifest first lists old and new names, so a crash midway leaves nothing unlisted.
    _write_manifest(directory, sorted(ours | set(names)))
    paths = [save(g, p) for g, p in targets]
    for old in sorted(ours - set(names)):
        (directory / old).unlink(missing_ok=True)
    _write_manifest(directory, sorted(names))
    return paths


def _write_manifest(directory: Path, names: list[str]) -> None:
    body = {"format": "tensorsmith-dumps/1", "files": names}
    atomic_write(directory / MANIFEST, (json.dumps(body, indent=1) + "\n").encode())


# --- data -------------------------------------------------------------------------------
def _stats_row(s) -> dict:
    return {"nodes": s.nodes, "params": s.params, "param_bytes": s.param_bytes, "flops": s.flops,
            "sparsity": s.sparsity}


def _is_metric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def layer_metrics(history) -> dict[str, dict]:
    """Per pass, numeric remark data as a table: {pass: {"columns": [...], "rows": [...]}}.

    Any pass that attaches numbers to a remark (``ctx.remark(..., node, scale=0.1, error=2e-3)``)
    gets a per-layer table in the report without the report knowing the pass.
    """
    tables: dict[str, dict] = {}
    for rec in history:
        cols: list[str] = []
        rows = []
        for r in rec.remarks:
            data = dict(r.data)
            nums = {k: float(v) for k, v in data.items() if _is_metric(v)}
            if not nums:
                continue
            label = str(data.get("layer") or data.get("param") or r.node or r.message)
            cols += [k for k in nums if k not in cols]
            rows.append({"label": label, "kind": r.kind, "values": nums})
        if rows:
            key = f"{rec.index:02d} {rec.name}"
            tables[key] = {"columns": cols, "rows": rows}
    return tables


def report_data(cm) -> dict:
    """Everything the report's script renders, as plain JSON-able data."""
    src, fin = graph_stats(cm.source), graph_stats(cm.graph)
    passes = []
    for rec in cm.history:
        kinds = Counter(r.kind for r in rec.remarks)
        defaults = {o.name: o.default for o in getattr(PASSES.get(rec.name), "options", ())}
        opts = ", ".join(f"{k}={v}" for k, v in rec.options.items()
                         if k not in defaults or defaults[k] != v)  # only what the user set
        passes.append({"index": rec.index, "name": rec.name, "options": opts,
                       "seconds": rec.seconds, "verify_seconds": rec.verify_seconds,
                       "before": _stats_row(rec.before), "after": _stats_row(rec.after),
                       "changed": rec.changed, "remarks": dict(kinds),
                       "compiler_options": dict(rec.compiler_options)})
    return {"model": cm.graph.name, "target": cm.target, "pipeline": cm.pipeline,
            "compiler_options": dict(getattr(cm, "compiler_options", {})),
            "source": _stats_row(src), "final": _stats_row(fin), "passes": passes}


# --- HTML pieces ------------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _human(n: float, unit: str = "") -> str:
    steps = (((2 ** 30, "Gi"), (2 ** 20, "Mi"), (2 ** 10, "Ki")) if unit == "B" else
             ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")))
    for div, suffix in steps:
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def _bar(value: float, top: float, width: int = 120, color: str = "#4c78a8") -> str:
    """A one-bar inline SVG: ``value`` as a fraction of ``top``."""
    frac = 0.0 if top <= 0 else max(0.0, min(1.0, abs(value) / top))
    w = round(frac * width, 1)
    return (f'<svg class="bar" width="{width}" height="12" role="img" aria-label="{value:.4g}">'
            f'<rect width="{width}" height="12" fill="#eef1f5"/>'
            f'<rect width="{w}" height="12" fill="{color}"/></svg>')


WEIGHTS_SHOWN = 12  # biggest weights listed openly; the rest fold into a <details>


def _zeros(arr) -> float | None:
    if arr is None or getattr(arr, "abstract", False) or arr.size == 0:
        return None
    return 1 - int((arr != 0).sum()) / arr.size


def _weights_table(cm) -> str:
    """Weights, biggest first; sparsity columns only when some weight has zeros."""
    params = sorted(cm.graph.params.items(), key=lambda kv: (-kv[1].nbytes, kv[0]))
    if not params:
        return "<p>This model has no weights.</p>"
    zeros = {k: (_zeros(cm.source.params.get(k)), _zeros(a)) for k, a in params}
    sparse = any(z for pair in zeros.values() for z in pair)
    rows = []
    for name, arr in params:
        before, after = zeros[name]
        cells = (f"<tr><td class=name>@{_e(name)}</td><td>{_e(tuple(arr.shape))}</td>"
                 f"<td>{_e(dtype_name(arr.dtype))}</td><td class=num>{_e(_human(arr.nbytes, 'B'))}</td>")
        if sparse:
            cells += (f"<td class=num>{'-' if before is None else f'{100 * before:.1f}%'}</td>"
                      f"<td class=num>{100 * (after or 0.0):.1f}%</td>"
                      f"<td>{_bar(after or 0.0, 1.0, color='#e45756')}</td>")
        rows.append(cells + "</tr>")
    head = ("<thead><tr><th>param</th><th>shape</th><th>dtype</th><th>bytes</th>"
            + ("<th>sparsity before</th><th>sparsity after</th><th></th>" if sparse else "")
            + "</tr></thead>")
    total = sum(a.nbytes for _, a in params)
    note = ("" if sparse else
            "<p class=meta>No weight has zeros, before or after the pipeline.</p>")
    out = (f"<p class=meta>{len(params)} weights, {_e(_human(total, 'B'))}, biggest first.</p>{note}"
           f"<table class=layers id=weights>{head}<tbody>{''.join(rows[:WEIGHTS_SHOWN])}</tbody></table>")
    if len(rows) > WEIGHTS_SHOWN:
        rest = sum(a.nbytes for _, a in params[WEIGHTS_SHOWN:])
        out += (f"<details><summary>{len(rows) - WEIGHTS_SHOWN} smaller weights "
                f"({_e(_human(rest, 'B'))})</summary><table class=layers>{head}<tbody>"
                f"{''.join(rows[WEIGHTS_SHOWN:])}</tbody></table></details>")
    return out


def _measured(measured: dict | None) -> str:
    """What the CLI measured (accuracy, error, latency), or '' when nothing was."""
    if not measured:
        return ""
    rows = []
    acc = measured.get("accuracy")
    if acc:
        rows.append(f"<tr><th>accuracy on {_e(measured.get('on', ''))}</th>"
                    f"<td class=num>{100 * acc['source']:.2f}%</td>"
                    f"<td class=num>{100 * acc['compiled']:.2f}%</td>"
                    f"<td class=num>{100 * (acc['compiled'] - acc['source']):+.2f} pt</td></tr>")
    if "max_abs_error" in measured:
        rows.append(f"<tr><th>max |compiled - source| on {_e(measured.get('on', ''))}</th>"
                    f"<td></td><td class=num>{measured['max_abs_error']:.3g}</td><td></td></tr>")
    lat = measured.get("latency")
    if lat:
        from .cli import speed_words
        rows.append(f"<tr><th>latency (batch {_e(lat.get('batch') or '-')}, median of "
                    f"{_e(lat['repeats'])} runs, {_e(lat['backend'])})</th>"
                    f"<td class=num>{1e3 * lat['baseline_s']:.3f} ms</td>"
                    f"<td class=num>{1e3 * lat['compiled_s']:.3f} ms</td>"
                    f"<td class=num>{_e(speed_words(lat['baseline_s'], lat['compiled_s']))}</td></tr>")
    if not rows:
        return ""
    baseline = _e((lat or {}).get("baseline", "source"))
    return (f"<h2>Measured</h2><table class=layers id=measured><thead><tr><th></th>"
            f"<th>{baseline}</th><th>compiled</th><th>change</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _metrics_tables(history) -> str:
    out = []
    for key, table in layer_metrics(history).items():
        cols = table["columns"]
        top = {c: max((abs(r["values"].get(c, 0.0)) for r in table["rows"]), default=0.0)
               for c in cols}
        head = "".join(f"<th>{_e(c)}</th>" for c in cols)
        body = []
        for r in table["rows"]:
            cells = "".join(
                f"<td class=num>{r['values'][c]:.4g} {_bar(r['values'][c], top[c], 80)}</td>"
                if c in r["values"] else "<td></td>" for c in cols)
            body.append(f"<tr><td class=name>{_e(r['label'])}</td><td>{_e(r['kind'])}</td>{cells}</tr>")
        out.append(f"<h3>{_e(key)}</h3><table class=layers><thead><tr><th>layer</th><th>remark</th>"
                   f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    # no section at all when no pass attached numbers: an empty heading says nothing
    return "<h2>Per-layer metrics from passes</h2>" + "".join(out) if out else ""


def _remarks(history) -> str:
    out = []
    for rec in history:
        if not rec.remarks:
            continue
        kinds = Counter(r.kind for r in rec.remarks)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        items = "".join(f"<li class={_e(r.kind)}><b>{_e(r.kind)}</b> <code>{_e(r.node)}</code> "
                        f"{_e(r.message)}</li>" for r in rec.remarks[:MAX_REMARKS])
        more = len(rec.remarks) - MAX_REMARKS
        if more > 0:
            items += f"<li>... and {more} more</li>"
        out.append(f"<details><summary>{rec.index:02d} {_e(rec.name)} — {_e(summary)}</summary>"
                   f"<ul class=remarks>{items}</ul></details>")
    return "".join(out) or "<p>No pass left remarks.</p>"


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = ("add" if line.startswith("+") and not line.startswith("+++") else
               "del" if line.startswith("-") and not line.startswith("---") else
               "hunk" if line.startswith("@@") else "")
        lines.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return "<pre class=diff>" + "\n".join(lines) + "</pre>"


def _diffs(history) -> str:
    out = []
    for rec in history:
        diff = rec.diff()
        label = "changed the IR" if diff else "no change"
        body = _diff_html(diff) if diff else "<p>The IR text is identical before and after.</p>"
        out.append(f"<details class=irdiff><summary>{rec.index:02d} {_e(rec.name)} — {label}"
                   f"</summary>{body}</details>")
    return "".join(out) or "<p>The pipeline is empty.</p>"


def _op_counts(cm) -> str:
    src, fin = graph_stats(cm.source).ops, graph_stats(cm.graph).ops
    rows = "".join(f"<tr><td>{_e(op)}</td><td class=num>{src.get(op, 0)}</td>"
                   f"<td class=num>{fin.get(op, 0)}</td></tr>" for op in sorted(set(src) | set(fin)))
    return ("<table class=layers><thead><tr><th>op</th><th>source</th><th>final</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _json_script(data) -> str:
    # '<' escaped so that no string in the data can close the <script> element.
    text = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="ts-data">{text}</script>'


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330}
#pipeline{overflow-x:auto}#pipeline table{font-size:13px}#pipeline td,#pipeline th{padding:3px 6px;white-space:nowrap}
#pipeline td:last-child{white-space:normal}.opts{color:#5a6477}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}.meta{color:#5a6477}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #e6e9ef;text-align:left;vertical-align:middle}
th{background:#f4f6f9;font-weight:600}td.num{text-align:right;white-space:nowrap}td.name{font-family:ui-monospace,Menlo,monospace;font-size:12px}
.dec{color:#2a7a3b}.inc{color:#b5332e}.same{color:#8a93a3}svg.bar{vertical-align:middle;margin-left:6px}
details{margin:4px 0;border:1px solid #e6e9ef;border-radius:4px;padding:4px 8px}summary{cursor:pointer;font-weight:500}
pre.diff{overflow-x:auto;background:#fafbfc;padding:8px;margin:6px 0}pre.diff .add{color:#1f7a35;background:#e9f7ec}
pre.diff .del{color:#a3281f;background:#fcebea}pre.diff .hunk{color:#6b4fbb}ul.remarks{margin:4px 0;padding-left:18px}
li.missed b{color:#b26b00}li.applied b{color:#2a7a3b}li.note b{color:#4c78a8}#ts-error{color:#b5332e;font-weight:600}
"""

_JS = r"""
(function () {
  function fmt(n, unit) {
    var units = unit === 'B' ? [[1073741824, 'Gi'], [1048576, 'Mi'], [1024, 'Ki']]
                             : [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'K']];
    for (var i = 0; i < units.length; i++)
      if (Math.abs(n) >= units[i][0]) return (n / units[i][0]).toFixed(1) + ' ' + units[i][1] + (unit || '');
    return String(n) + (unit ? ' ' + unit : '');
  }
  function pct(x) { return (100 * x).toFixed(1) + '%'; }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function change(b, a, show, absolute) {
    var td = el('td', {'class': 'num'});
    td.appendChild(document.createTextNode(show(b) + ' \u2192 ' + show(a) + ' '));
    var d = a - b, span;
    if (d === 0) span = el('span', {'class': 'same'}, '(=)');
    else span = el('span', {'class': d < 0 ? 'dec' : 'inc'},
                   '(' + (d > 0 ? '+' : '') + (b && !absolute ? (100 * d / b).toFixed(1) + '%'
                                                              : show(d)) + ')');
    td.appendChild(span);
    return td;
  }
  function bar(frac, width) {
    var ns = 'http://www.w3.org/2000/svg', svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('class', 'bar'); svg.setAttribute('width', width); svg.setAttribute('height', 12);
    var bg = document.createElementNS(ns, 'rect'), fg = document.createElementNS(ns, 'rect');
    bg.setAttribute('width', width); bg.setAttribute('height', 12); bg.setAttribute('fill', '#eef1f5');
    fg.setAttribute('width', (Math.max(0, Math.min(1, frac)) * width).toFixed(1));
    fg.setAttribute('height', 12); fg.setAttribute('fill', '#4c78a8');
    svg.appendChild(bg); svg.appendChild(fg);
    return svg;
  }
  function pipelineTable(data) {
    var sparse = data.source.sparsity > 0 || data.final.sparsity > 0 || data.passes.some(
      function (p) { return p.before.sparsity > 0 || p.after.sparsity > 0; });
    var cols = ['#', 'pass', 'time', 'nodes', 'params', 'param bytes', 'FLOPs'].concat(
      sparse ? ['sparsity', 'remarks'] : ['remarks']);
    var table = el('table', {id: 'pipeline-table'}), head = el('tr');
    cols.forEach(function (c) { head.appendChild(el('th', {}, c)); });
    table.appendChild(el('thead')).appendChild(head);
    var body = el('tbody'), slowest = 0;
    data.passes.forEach(function (p) { slowest = Math.max(slowest, p.seconds + p.verify_seconds); });
    data.passes.forEach(function (p) {
      var tr = el('tr', {'class': 'pass-row', 'data-pass': p.name});
      tr.appendChild(el('td', {'class': 'num'}, String(p.index)));
      var name = el('td', {'class': 'name'}, p.name);
      if (p.options) name.appendChild(el('div', {'class': 'opts'}, '{' + p.options + '}'));
      tr.appendChild(name);
      var t = el('td', {'class': 'num', title: 'pass ' + (1e3 * p.seconds).toFixed(2) +
                        ' ms + verify ' + (1e3 * p.verify_seconds).toFixed(2) + ' ms'},
                 (1e3 * p.seconds).toFixed(2) + ' ms');
      t.appendChild(bar(slowest ? (p.seconds + p.verify_seconds) / slowest : 0, 60));
      tr.appendChild(t);
      tr.appendChild(change(p.before.nodes, p.after.nodes, String));
      tr.appendChild(change(p.before.params, p.after.params, String));
      tr.appendChild(change(p.before.param_bytes, p.after.param_bytes, function (x) { return fmt(x, 'B'); }));
      tr.appendChild(change(p.before.flops, p.after.flops, function (x) { return fmt(x, 'FLOPs'); }));
      if (sparse) tr.appendChild(change(p.before.sparsity, p.after.sparsity, pct, true));
      var r = [];
      for (var k in p.remarks) r.push(p.remarks[k] + ' ' + k);
      tr.appendChild(el('td', {}, r.join(', ') || '-'));
      body.appendChild(tr);
    });
    var total = el('tr', {'class': 'total'}), sum = 0;
    data.passes.forEach(function (p) { sum += p.seconds; });
    total.appendChild(el('td')); total.appendChild(el('th', {}, 'source \u2192 final'));
    total.appendChild(el('td', {'class': 'num'}, (1e3 * sum).toFixed(2) + ' ms'));
    total.appendChild(change(data.source.nodes, data.final.nodes, String));
    total.appendChild(change(data.source.params, data.final.params, String));
    total.appendChild(change(data.source.param_bytes, data.final.param_bytes, function (x) { return fmt(x, 'B'); }));
    total.appendChild(change(data.source.flops, data.final.flops, function (x) { return fmt(x, 'FLOPs'); }));
    if (sparse) total.appendChild(change(data.source.sparsity, data.final.sparsity, pct, true));
    total.appendChild(el('td'));
    body.appendChild(total);
    table.appendChild(body);
    return table;
  }
  function fail(e) {
    var box = document.getElementById('ts-error');
    box.hidden = false;
    box.textContent += 'report script error: ' + (e && e.message ? e.message : e) + '\n';
    document.body.dataset.ready = 'error';
  }
  window.addEventListener('error', function (ev) { fail(ev.error || ev.message); });
  try {
    var data = JSON.parse(document.getElementById('ts-data').textContent);
    var host = document.getElementById('pipeline');
    host.textContent = '';
    host.appendChild(pipelineTable(data));
    if (document.body.dataset.ready !== 'error') document.body.dataset.ready = '1';
  } catch (e) { fail(e); }
})();
"""


def _options_meta(options: dict) -> str:
    """The XLA compiler options of the executables, for the header line ('' when none)."""
    if not options:
        return ""
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
    return f" · XLA options <code>{_e(text)}</code>"


def render_report(cm, measured: dict | None = None) -> str:
    """The report for a CompiledModel as one self-contained HTML page (no network access).

    ``measured``: accuracy/error/latency the caller measured (the CLI's), shown when given.
    """
    data = report_data(cm)
    title = f"tensorsmith report: @{data['model']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body data-ready="0">
<h1>{_e(title)}</h1>
<div class=meta>target <b>{_e(data['target'])}</b> · pipeline <code>{_e(data['pipeline'] or '(none)')}</code>{_options_meta(data['compiler_options'])}</div>
<pre id="ts-error" hidden></pre>
<h2>Pipeline</h2>
<div id="pipeline"><noscript>The pipeline table needs JavaScript; the data is in the ts-data script element.</noscript></div>
{_measured(measured)}
{_metrics_tables(cm.history)}
<h2>Remarks</h2>{_remarks(cm.history)}
<h2>IR diff per pass</h2>{_diffs(cm.history)}
<h2>Weights</h2>{_weights_table(cm)}
<h2>Ops</h2>{_op_counts(cm)}
<details><summary>Final IR</summary><pre>{_e(cm.graph.to_text())}</pre></details>
{_json_script(data)}
<script>{_JS}</script>
</body></html>
"""


def write_report(cm, path, measured: dict | None = None) -> Path:
    """Write the HTML report for ``cm`` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write(path, render_report(cm, measured).encode("utf-8"))
    return path
