"""Results of a run: one record per case and target, built from pytest's reports.

The same records feed the terminal matrix, --results-json and --html, so the
three always agree. The JSON schema is documented in docs/results-schema.md.
"""

from __future__ import annotations

import json
import re
import time

from . import outputs

SCHEMA = "tcp-conformance-results"
VERSION = 1
RESERVED = {"target", "family", "behaviour", "key", "detail", "runtime", "pcap"}


def _props(report) -> dict:
    return dict(getattr(report, "user_properties", []) or [])


def _skip_reason(rep) -> str:
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = longrepr[2]
        return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason
    return str(longrepr or "")


def _failure(rep) -> str:
    """The failure's sentence: the first line of its message, without the exception's class
    ("AssertionError: the RST must ack the SYN" -> "the RST must ack the SYN")."""
    crash = getattr(getattr(rep, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(rep.longrepr or "")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return re.sub(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Failed|Fail))(?::\s*|$)", "", first) or first


def verdict_of(rep) -> tuple[str, str]:
    """(verdict, reason) of one report: pass, FAIL, ERROR, skip, diff (declared), XPASS."""
    wasxfail = getattr(rep, "wasxfail", None)
    if wasxfail is not None:
        wasxfail = wasxfail.removeprefix("declared difference: ")
        if rep.skipped:
            return "diff", wasxfail
        return "XPASS", f"declared difference is gone: {wasxfail}"
    if rep.failed and "XPASS(strict)" in str(rep.longrepr):
        return "XPASS", "declared difference is gone: " + str(rep.longrepr).split("]", 1)[-1].strip()
    if rep.passed:
        return "pass", ""
    if rep.skipped:
        return "skip", _skip_reason(rep)
    if rep.when == "call":
        return "FAIL", _failure(rep)
    return "ERROR", f"{rep.when}: {_failure(rep)}"


def collect(reports) -> list[dict]:
    """One record per case and target (reports of every phase, any order)."""
    records: dict[str, dict] = {}
    order = sorted(reports, key=lambda r: (r.location[0], r.location[1] or 0, r.nodeid))
    for rep in order:
        props = _props(rep)
        if "behaviour" not in props:
            continue
        rec = records.setdefault(
            rep.nodeid,
            {
                "id": rep.nodeid,
                "case": props["behaviour"],
                "test": rep.nodeid.split("::")[-1].split("[")[0],
                "family": props.get("family"),
                "target": props["target"],
                "verdict": None,
                "reason": "",
                "key": "",
                "detail": "",
                "observed": {},
                "runtime": "",
                "pcap": None,
                "duration_s": 0.0,
                "evidence": {},
            },
        )
        rec["duration_s"] = round(rec["duration_s"] + (rep.duration or 0.0), 6)
        for k, v in props.items():
            if k in ("key", "detail", "runtime", "pcap"):
                rec[k] = v
            elif k not in RESERVED:
                rec["observed"][k] = v
        rec["evidence"].update(getattr(rep, "tcc_evidence", None) or {})
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            rec["verdict"], rec["reason"] = verdict_of(rep)
        elif rep.when == "teardown" and rep.failed:
            rec["verdict"], rec["reason"] = "ERROR", f"teardown: {_failure(rep)}"
    return [r for r in records.values() if r["verdict"] is not None]


def document(
    records: list[dict], *, profile: str, sysctls: dict, kernel: str, kernel_version: str, targets: list[str]
) -> dict:
    runtimes, about = {}, {}
    for r in records:
        if r["runtime"]:
            runtimes.setdefault(r["target"], r["runtime"])
        for field in ("command", "variant", "agent_uid", "evidence_source"):
            if r["observed"].get(field):
                about.setdefault(r["target"], {}).setdefault(field, r["observed"][field])
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": kernel,
        "kernel_version": kernel_version,
        "profile": profile,
        "sysctls": sysctls,
        "targets": {t: {"runtime": runtimes.get(t, ""), **about.get(t, {})} for t in targets},
        "results": records,
    }


def write_json(path: str, doc: dict) -> None:
    outputs.write_json(path, doc)


def load_json(path: str) -> dict:
    """A results file, checked for the shape compare relies on; ValueError names the file and field."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a results file") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a results file is a JSON object, this is a {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a results file of this suite (schema {doc.get('schema')!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: results schema version {doc.get('version')}, this suite reads {VERSION}")
    for field, kind in (("results", list), ("targets", dict), ("sysctls", dict)):
        if not isinstance(doc.get(field), kind):
            raise ValueError(f"{path}: field `{field}` must be a {kind.__name__}, is {type(doc.get(field)).__name__}")
    for i, rec in enumerate(doc["results"]):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: results[{i}] must be an object, is {type(rec).__name__}")
        for field in ("case", "target", "verdict", "key"):
            if not isinstance(rec.get(field), str):
                raise ValueError(f"{path}: results[{i}].{field} must be a string, is {type(rec.get(field)).__name__}")
    return doc
