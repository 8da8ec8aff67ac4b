"""The behaviour matrix printed at the end of a run: rows are behaviours, columns targets.

Each cell is the verdict (pass, FAIL, ERROR, skip, diff = declared difference,
XPASS = a declared difference that is gone) and the key observed value.
Three targets fit in 100 columns.
"""

from __future__ import annotations

CELL = 26
LEGEND = "cells: pass | FAIL | ERROR | skip reason | diff = declared difference | XPASS = difference gone"
OWN_TABLES = "*"  # marks a column whose kernel-side evidence came from the target's own tables


def own_tables(records: list[dict]) -> dict[str, str]:
    """Targets whose socket states and counters did not come from the kernel: {target: source}."""
    out = {}
    for r in records:
        source = r.get("observed", {}).get("evidence_source")
        if source and not source.startswith("kernel"):
            out.setdefault(r["target"], source)
    return out


def cell_text(rec: dict) -> str:
    if rec["verdict"] in ("pass", "FAIL"):
        detail = " ".join(x for x in (rec["key"], rec["detail"]) if x) if rec["verdict"] == "pass" else rec["reason"]
    else:
        detail = rec["reason"] or rec["key"]
    return f"{rec['verdict']} {detail}".strip()


def render(records: list[dict], targets: list[str]) -> str:
    if not records:
        return ""
    cells = {(r["case"], r["target"]): r for r in records}
    behaviours = list(dict.fromkeys(r["case"] for r in records))
    columns = [t for t in targets if any(r["target"] == t for r in records)]
    columns += [t for t in dict.fromkeys(r["target"] for r in records) if t not in columns]
    # Fit 100 columns: the behaviour column takes what it needs (up to 34), the targets share the rest.
    width = min(max(len(b) for b in behaviours) + 1, 34)
    cell = max(18, min(CELL, (100 - width) // max(1, len(columns))))

    def fit(text: str, n: int) -> str:
        return (text[: n - 2] + "…" if len(text) > n - 1 else text).ljust(n)

    marked = own_tables(records)
    lines = [fit("behaviour", width) + "".join(fit(t + (OWN_TABLES if t in marked else ""), cell) for t in columns)]
    for b in behaviours:
        row = fit(b, width)
        for t in columns:
            rec = cells.get((b, t))
            row += fit(cell_text(rec) if rec else "-", cell)
        lines.append(row.rstrip())
    counts = {}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines.append(", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    lines.append(LEGEND)
    for t, source in marked.items():
        lines.append(f"{OWN_TABLES}{t}: {source.removeprefix('target: ')}")
    return "\n".join(lines)
