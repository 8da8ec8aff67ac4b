"""--html: one self-contained page: the matrix, each cell opening its evidence."""

from __future__ import annotations

import html
import os

from . import outputs
from .matrix import cell_text, own_tables

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
.scroll{overflow:auto;max-height:85vh;max-width:100%;border:1px solid #ccc}
table.matrix{border-collapse:separate;border-spacing:0}
.matrix thead th{position:sticky;top:0;z-index:2;background:#fafafa}
.matrix tbody th{position:sticky;left:0;z-index:1;background:#fafafa;white-space:nowrap}
.matrix td{white-space:nowrap}
.matrix thead th:first-child{left:0;z-index:3}
.matrix th,.matrix td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.matrix td a{color:inherit;text-decoration:none;display:block}
.pass{background:#e6f4e6}.FAIL,.ERROR,.XPASS{background:#fbe3e3}.skip{background:#f1f1f1}.diff{background:#fff4d6}
details{border:1px solid #ddd;margin:.5em 0;padding:.3em .6em}details:target{outline:2px solid #36c}
summary{cursor:pointer;font-weight:600}pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:12px}
table.kv td{padding:1px 8px 1px 0;vertical-align:top;font-size:13px}
"""
SCRIPT = """
function openTarget(){var id=location.hash.slice(1);var d=id&&document.getElementById(id);
if(d&&d.tagName==='DETAILS'){d.open=true;d.scrollIntoView();}}
window.addEventListener('hashchange',openTarget);window.addEventListener('load',openTarget);
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _kv(d: dict) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in d.items())
    return f"<table class='kv'>{rows}</table>" if rows else "<p>-</p>"


def _evidence(i: int, rec: dict, page_dir: str) -> str:
    ev = rec.get("evidence") or {}
    parts = [f"<p><b>{_e(rec['verdict'])}</b> {_e(rec['reason'])}</p>"]
    parts.append(
        "<h4>Observed</h4>"
        + _kv(
            {
                "key": rec["key"],
                "detail": rec["detail"],
                "runtime": rec["runtime"],
                "duration_s": rec["duration_s"],
                **rec["observed"],
            }
        )
    )
    if rec.get("pcap"):
        href = os.path.relpath(rec["pcap"], page_dir) if page_dir else rec["pcap"]
        parts.append(f"<p>pcap: <a href='{_e(href)}'>{_e(rec['pcap'])}</a></p>")
    if ev.get("wire"):
        parts.append("<h4>Packets (peer side of the link)</h4><pre>" + _e("\n".join(ev["wire"])) + "</pre>")
    if ev.get("sockets"):
        parts.append("<h4>Socket tables at the end of the case</h4><pre>" + _e("\n".join(ev["sockets"])) + "</pre>")
    if ev.get("transcript"):
        lines = "\n".join(f"> {c}\n< {r}" for c, r in ev["transcript"])
        parts.append("<h4>Agent commands and replies</h4><pre>" + _e(lines) + "</pre>")
    if ev.get("sysctls"):
        parts.append("<h4>Target namespace sysctls</h4>" + _kv(ev["sysctls"]))
    return (
        f"<details id='e{i}'><summary>{_e(rec['case'])} on {_e(rec['target'])}: {_e(rec['verdict'])}"
        f" <small>{_e(rec['id'])}</small></summary>{''.join(parts)}</details>"
    )


def render(doc: dict, page_path: str | None = None) -> str:
    records = doc["results"]
    page_dir = os.path.dirname(os.path.abspath(page_path)) if page_path else ""
    targets = list(doc.get("targets") or dict.fromkeys(r["target"] for r in records))
    behaviours = list(dict.fromkeys(r["case"] for r in records))
    index = {(r["case"], r["target"]): i for i, r in enumerate(records)}
    marked = own_tables(records)
    source = {t: f"<br><small><i>evidence: {_e(s.removeprefix('target: '))}</i></small>" for t, s in marked.items()}
    head = "".join(
        f"<th>{_e(t)}<br><small>{_e(doc['targets'].get(t, {}).get('runtime', ''))}</small>{source.get(t, '')}</th>"
        for t in targets
    )
    rows = []
    for b in behaviours:
        cells = []
        for t in targets:
            i = index.get((b, t))
            if i is None:
                cells.append("<td>-</td>")
                continue
            rec = records[i]
            cells.append(f"<td class='{_e(rec['verdict'])}'><a href='#e{i}'>{_e(cell_text(rec))}</a></td>")
        rows.append(f"<tr><th>{_e(b)}</th>{''.join(cells)}</tr>")
    sysctls = " ".join(f"{k}={v}" for k, v in doc.get("sysctls", {}).items()) or "none"
    evidence = "".join(_evidence(i, r, page_dir) for i, r in enumerate(records))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TCP conformance matrix</title>
<style>{STYLE}</style></head><body>
<h1>TCP conformance matrix</h1>
<p>Kernel {_e(doc.get("kernel"))}, profile <code>{_e(doc.get("profile"))}</code>, sysctls {_e(sysctls)},
created {_e(doc.get("created"))}. Click a cell for its evidence.</p>
<div class="scroll"><table class="matrix" id="matrix"><thead><tr><th>behaviour</th>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>
<h2>Evidence</h2>{evidence}
<script>{SCRIPT}</script></body></html>
"""


def write(path: str, doc: dict) -> None:
    outputs.write_atomically(path, render(doc, path))
