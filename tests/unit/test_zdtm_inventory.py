"""Every CRIU static test is accounted for: covered by a zdtm-style case, by another
test file, or skipped with a reason (docs/zdtm-inventory.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"[\w+.-]+")


def _table_names(section: str) -> set[str]:
    """The CRIU test names in the first column of the tables of ``section``."""
    text = (ROOT / "docs" / "zdtm-inventory.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("| CRIU tests") and "---" not in line:
            names.update(n.strip() for n in line.split("|")[1].split(","))
    return names


def _case_names() -> set[str]:
    """Every word of the ``zdtm=`` columns of tests/test_zdtm_style.py's table."""
    source = (ROOT / "tests" / "test_zdtm_style.py").read_text()
    names: set[str] = set()
    for m in re.finditer(r'zdtm=((?:"[^"]*"\s*)+)', source):
        names.update(NAME.findall(" ".join(re.findall(r'"([^"]*)"', m[1]))))
    return names


def test_every_criu_static_test_is_accounted_for() -> None:
    criu = (ROOT / "tests" / "zdtm" / "criu-static-tests.txt").read_text().split()
    accounted = _case_names() | _table_names("Covered by other test files") \
        | _table_names("Skipped")
    missing = [n for n in criu if n not in accounted]
    assert not missing, f"CRIU tests neither covered nor skipped: {missing}"


def test_skipped_ones_are_not_also_covered() -> None:
    both = _table_names("Skipped") & _case_names()
    assert not both, f"listed as skipped but covered by a case: {sorted(both)}"
