"""The behaviour matrix printed at the end of a run: rows are behaviours, columns targets."""
from __future__ import annotations

CELL = 25


def _props(report) -> dict:
    return dict(getattr(report, "user_properties", []) or [])


def collect(reports) -> dict:
    """{(behaviour, target): (verdict, key value)} from pytest reports of target-parametrized tests."""
    cells: dict = {}
    # Rows in the order the cases are written (xdist reports arrive in any order).
    reports = sorted(reports, key=lambda r: (r.location[0], r.location[1] or 0, r.nodeid))
    for rep in reports:
        props = _props(rep)
        if "behaviour" not in props:
            continue
        key = (props["behaviour"], props["target"])
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            verdict = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}[rep.outcome]
            if rep.when == "setup" and rep.failed:
                verdict = "ERROR"
            detail = props.get("key", "")
            if verdict == "skip":
                detail = _skip_reason(rep)
            cells[key] = (verdict, detail)
        elif rep.when == "teardown" and rep.failed and key in cells:
            cells[key] = ("ERROR", "teardown")
    return cells


def _skip_reason(rep) -> str:
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = longrepr[2]
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return ""


def render(reports, targets: list[str]) -> str:
    cells = collect(reports)
    if not cells:
        return ""
    behaviours = list(dict.fromkeys(b for b, _ in cells))
    seen_targets = [t for t in targets if any(t == tt for _, tt in cells)]
    seen_targets += [t for t in dict.fromkeys(tt for _, tt in cells) if t not in seen_targets]
    width = max(len(b) for b in behaviours) + 1
    lines = ["behaviour".ljust(width) + "".join(t[:CELL - 1].ljust(CELL) for t in seen_targets)]
    for b in behaviours:
        row = b.ljust(width)
        for t in seen_targets:
            verdict, detail = cells.get((b, t), ("-", ""))
            text = f"{verdict} {detail}".strip()
            row += (text[:CELL - 2] + "…" if len(text) > CELL - 1 else text).ljust(CELL)
        lines.append(row.rstrip())
    return "\n".join(lines)
