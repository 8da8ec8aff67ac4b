"""Declared differences (expectations.toml): behaviours a target shows by design.

A matching case that fails is a declared difference (pytest xfail); one that
passes means the difference is gone: strict xfail fails the run, unless
--update-expectations removes the stale entry.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

KEYS = {"target", "case", "families", "kernel", "reason"}


class ExpectationsError(ValueError):
    pass


def kernel_version(release: str | None = None) -> str:
    """The numeric part of the kernel release: '6.18.44-fc-v669' -> '6.18.44'."""
    release = release or os.uname().release
    m = re.match(r"\d+(\.\d+)*", release)
    return m.group(0) if m else "0"


@dataclass
class Difference:
    index: int  # the entry's position in its file
    target: str
    case: str
    reason: str
    families: tuple = ()
    kernel: str = ""
    path: str = ""  # the file that declares it

    @property
    def key(self) -> str:
        """Names the entry across files: PATH#INDEX."""
        return f"{self.path}#{self.index}"

    def matches(self, target: str, names, family: str | None, kernel: str) -> bool:
        """names: what the case is called: its full test name, its function, test_<matrix row>."""
        if target != self.target:
            return False
        if self.case not in names:
            return False
        if self.families and family not in self.families:
            return False
        if self.kernel and not SpecifierSet(self.kernel).contains(kernel, prereleases=True):
            return False
        return True


def load(path: Path) -> list[Difference]:
    """Read and validate the file; any problem is an ExpectationsError naming the entry."""
    if not path.exists():
        return []
    try:  # read with the standard library (fast: every xdist worker reads it); tomlkit only to edit
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ExpectationsError(f"{path}: not valid TOML: {e}") from None
    unknown_top = set(doc) - {"difference"}
    if unknown_top:
        raise ExpectationsError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}; expected [[difference]]")
    out = []
    for i, entry in enumerate(doc.get("difference", [])):
        where = f"{path}: [[difference]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ExpectationsError(f"{where}: not a table")
        extra = set(entry) - KEYS
        if extra:
            raise ExpectationsError(f"{where}: unknown key(s) {sorted(extra)}")
        for key in ("target", "case", "reason"):
            if not isinstance(entry.get(key), str) or not entry.get(key).strip():
                raise ExpectationsError(f"{where}: `{key}` must be a non-empty string")
        families = entry.get("families", [])
        if not isinstance(families, list) or any(f not in ("v4", "v6") for f in families):
            raise ExpectationsError(f'{where}: `families` must be a list of "v4" / "v6"')
        kernel = entry.get("kernel", "")
        if kernel:
            try:
                SpecifierSet(str(kernel))
            except InvalidSpecifier:
                raise ExpectationsError(
                    f'{where}: `kernel` {kernel!r} is not a version range like ">=6.5,<7"'
                ) from None
        out.append(
            Difference(
                i,
                str(entry["target"]),
                str(entry["case"]),
                str(entry["reason"]),
                tuple(str(f) for f in families),
                str(kernel),
                str(path),
            )
        )
    return out


def load_all(paths) -> list[Difference]:
    """Every file's differences, in order: files add to each other (a user's file beside the repository's)."""
    return [d for path in paths for d in load(Path(path))]


def remove(path: Path, indexes: set[int]) -> None:
    """Rewrite the file without the entries at indexes, keeping comments and order."""
    import tomlkit  # keeps the file's comments and layout when it removes entries

    doc = tomlkit.parse(path.read_text())
    aot = doc.get("difference")
    if aot is None:
        return
    for i in sorted(indexes, reverse=True):
        del aot[i]
    if not len(aot):
        del doc["difference"]
    path.write_text(tomlkit.dumps(doc))
