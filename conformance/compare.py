"""Compare two result files: every case and target whose verdict or key observed value differs."""

from __future__ import annotations

from .results import load_json


def diff(a: dict, b: dict) -> list[tuple]:
    """Rows (case, target, (verdict, key) in A or None, same in B) that differ."""
    index_a = {(r["case"], r["target"]): r for r in a["results"]}
    index_b = {(r["case"], r["target"]): r for r in b["results"]}
    rows = []
    for key in list(dict.fromkeys([*index_a, *index_b])):
        ra, rb = index_a.get(key), index_b.get(key)
        va = (ra["verdict"], ra["key"]) if ra else None
        vb = (rb["verdict"], rb["key"]) if rb else None
        if va != vb:
            rows.append((key[0], key[1], va, vb))
    return rows


def _fmt(v) -> str:
    return "(missing)" if v is None else " ".join(x for x in v if x)


def _header(doc: dict, path: str) -> str:
    runtimes = ", ".join(f"{t} {i.get('runtime', '')}".strip() for t, i in doc.get("targets", {}).items())
    sysctls = " ".join(f"{k}={v}" for k, v in doc.get("sysctls", {}).items()) or "-"
    return f"{path}: kernel {doc.get('kernel')}, profile {doc.get('profile')}, sysctls {sysctls}; {runtimes}"


def main(path_a: str, path_b: str, exit_zero: bool = False, out=print) -> int:
    a, b = load_json(path_a), load_json(path_b)
    rows = diff(a, b)
    out("A = " + _header(a, path_a))
    out("B = " + _header(b, path_b))
    if rows:
        w_case = max(len("case"), *(len(r[0]) for r in rows))
        w_t = max(len("target"), *(len(r[1]) for r in rows))
        w_a = max(len("A"), *(len(_fmt(r[2])) for r in rows))
        out(f"{'case':<{w_case}}  {'target':<{w_t}}  {'A':<{w_a}}  B")
        for case, target, va, vb in rows:
            out(f"{case:<{w_case}}  {target:<{w_t}}  {_fmt(va):<{w_a}}  {_fmt(vb)}")
    total = len({(r["case"], r["target"]) for r in a["results"]} | {(r["case"], r["target"]) for r in b["results"]})
    missing = sum(1 for r in rows if r[2] is None or r[3] is None)
    out(f"{len(rows)} of {total} case/target cells differ ({missing} missing on one side)")
    return 1 if rows and not exit_zero else 0
