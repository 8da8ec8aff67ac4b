"""Compare two result files: every case and target whose verdict or key observed value differs.

With a file of declared kernel differences (`--declared kernel-differences.toml`), each differing cell
is checked against it: a difference is declared when an entry names its case (and target, family),
exactly one of the two runs has a kernel in the entry's range, that run's cell is the entry's `cell`,
and the other run's is its `otherwise` (when given). An entry that applies to the two runs (their
kernels straddle its range and both have a cell it names) but explains no differing cell is a
difference gone. Either an undeclared difference or a gone one makes compare exit 1.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .expectations import kernel_version
from .results import load_json

DECLARED_KEYS = {"case", "targets", "families", "kernel", "cell", "otherwise", "reason"}


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


def _names(case: str) -> tuple[set, str | None]:
    """What a declaration may call a matrix row ("timedout v4"): the row, the row without its family,
    test_<row>; and the row's family."""
    row, _, family = case.rpartition(" ")
    if family not in ("v4", "v6"):
        row, family = case, None
    return {case, row, f"test_{row}"}, family


def run_kernel(doc: dict) -> str | None:
    """The numeric kernel version a results file was made on ("6.1.176"), None if it does not say."""
    if doc.get("kernel_version"):
        return kernel_version(str(doc["kernel_version"]))
    return kernel_version(str(doc["kernel"])) if doc.get("kernel") else None


@dataclass(frozen=True)
class KernelDifference:
    """One [[difference]] of a declared kernel differences file."""

    index: int  # 1-based, in its file
    case: str
    kernel: str
    cell: str
    reason: str
    targets: tuple = ()
    families: tuple = ()
    otherwise: str | None = None
    path: str = ""

    def __str__(self):
        return f"{self.path} #{self.index} ({self.case}, kernel {self.kernel})"

    def names(self, case: str, target: str, test: str | None = None) -> bool:
        """Whether this entry names the cell (case, target) of a run."""
        names, family = _names(case)
        if test:
            names.add(test)
        if self.case not in names:
            return False
        if self.targets and target not in self.targets:
            return False
        return not (self.families and family not in self.families)

    def in_range(self, kernel: str | None) -> bool:
        return kernel is not None and SpecifierSet(self.kernel).contains(kernel, prereleases=True)

    def explains(self, row: tuple, kernel_a: str | None, kernel_b: str | None) -> bool:
        """Whether this entry declares the differing row (case, target, A's cell, B's cell)."""
        case, target, va, vb = row
        if not self.names(case, target):
            return False
        in_a, in_b = self.in_range(kernel_a), self.in_range(kernel_b)
        if in_a == in_b:
            return False
        inside, outside = (va, vb) if in_a else (vb, va)
        if inside is None or outside is None or _fmt(inside) != self.cell:
            return False
        return self.otherwise is None or _fmt(outside) == self.otherwise


def load_declared(path: str) -> list[KernelDifference]:
    """Read and check a declared kernel differences file; a problem is a ValueError naming the entry."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    if set(doc) - {"difference"}:
        raise ValueError(
            f"{path}: unknown top-level key(s) {sorted(set(doc) - {'difference'})}; expected [[difference]]"
        )
    out = []
    for i, entry in enumerate(doc.get("difference", []), 1):
        where = f"{path}: [[difference]] #{i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: not a table")
        if set(entry) - DECLARED_KEYS:
            raise ValueError(f"{where}: unknown key(s) {sorted(set(entry) - DECLARED_KEYS)}")
        for key in ("case", "kernel", "cell", "reason"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where}: `{key}` must be a non-empty string")
        if "otherwise" in entry and (not isinstance(entry["otherwise"], str) or not entry["otherwise"].strip()):
            raise ValueError(f"{where}: `otherwise` must be a non-empty string")
        try:
            SpecifierSet(entry["kernel"])
        except InvalidSpecifier:
            raise ValueError(f'{where}: `kernel` {entry["kernel"]!r} is not a version range like "<6.5"') from None
        for key, allowed in (("targets", None), ("families", {"v4", "v6"})):
            value = entry.get(key, [])
            if not isinstance(value, list) or any(
                not isinstance(v, str) or (allowed and v not in allowed) for v in value
            ):
                raise ValueError(f"{where}: `{key}` must be a list of " + ('"v4" / "v6"' if allowed else "names"))
        out.append(
            KernelDifference(
                i,
                entry["case"],
                entry["kernel"],
                entry["cell"],
                entry["reason"],
                tuple(entry.get("targets", [])),
                tuple(entry.get("families", [])),
                entry.get("otherwise"),
                path,
            )
        )
    return out


def judge(a: dict, b: dict, rows: list[tuple], declared: list[KernelDifference]):
    """({row: the entry that declares it}, [entries that apply to these runs but explain no row])."""
    ka, kb = run_kernel(a), run_kernel(b)
    explained = {}
    for row in rows:
        entry = next((d for d in declared if d.explains(row, ka, kb)), None)
        if entry is not None:
            explained[row] = entry
    index_b = {(r["case"], r["target"]) for r in b["results"]}
    both = [(r["case"], r["target"], r.get("test")) for r in a["results"] if (r["case"], r["target"]) in index_b]
    gone = [
        d
        for d in declared
        if d.in_range(ka) != d.in_range(kb) and any(d.names(*cell) for cell in both) and d not in explained.values()
    ]
    return explained, gone


def main(path_a: str, path_b: str, exit_zero: bool = False, out=print, declared: str | None = None) -> int:
    a, b = load_json(path_a), load_json(path_b)
    entries = load_declared(declared) if declared else []
    rows = diff(a, b)
    explained, gone = judge(a, b, rows, entries) if declared else ({}, [])
    out("A = " + _header(a, path_a))
    out("B = " + _header(b, path_b))
    if rows:
        w_case = max(len("case"), *(len(r[0]) for r in rows))
        w_t = max(len("target"), *(len(r[1]) for r in rows))
        w_a = max(len("A"), *(len(_fmt(r[2])) for r in rows))
        w_b = max(len("B"), *(len(_fmt(r[3])) for r in rows))
        tail = "  declared" if declared else ""
        out(f"{'case':<{w_case}}  {'target':<{w_t}}  {'A':<{w_a}}  {'B':<{w_b}}{tail}".rstrip())
        for row in rows:
            case, target, va, vb = row
            mark = ""
            if declared:
                mark = f"  #{explained[row].index} (kernel {explained[row].kernel})" if row in explained else "  NO"
            out(f"{case:<{w_case}}  {target:<{w_t}}  {_fmt(va):<{w_a}}  {_fmt(vb):<{w_b}}{mark}".rstrip())
    total = len({(r["case"], r["target"]) for r in a["results"]} | {(r["case"], r["target"]) for r in b["results"]})
    missing = sum(1 for r in rows if r[2] is None or r[3] is None)
    summary = f"{len(rows)} of {total} case/target cells differ ({missing} missing on one side)"
    if not declared:
        out(summary)
        return 1 if rows and not exit_zero else 0
    for entry in dict.fromkeys(explained.values()):
        out(f"declared #{entry.index}: {entry.case}, kernel {entry.kernel}: {entry.reason}")
    for entry in gone:
        out(f"declared but not seen (the difference is gone; remove the entry): {entry}")
    undeclared = len(rows) - len(explained)
    out(f"{summary}: {len(explained)} declared in {declared}, {undeclared} undeclared, {len(gone)} declared but gone")
    return 1 if (undeclared or gone) and not exit_zero else 0
