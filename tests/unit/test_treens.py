"""namespaces.json as a restore reads it: the names and sysctls of the tree's own uts and
ipc namespaces, anything else refused with the file named."""

from __future__ import annotations

from typing import Any

import pytest

from ckpt import validate
from ckpt.errors import ImageError
from ckpt.resources.treens import check_image

GOOD = {"uts": {"hostname": "box", "domainname": "(none)"},
        "ipc": {"sysctls": {"kernel/msgmax": "8192", "kernel/sem": "32000 1024000000 500 32000"}}}


def test_good_image_passes() -> None:
    assert check_image(GOOD, "namespaces.json") == GOOD
    assert check_image({}, "namespaces.json") == {}
    more = {**GOOD, "net": {"external": "extRootNetNS"}, "cgroup": {}}
    assert check_image(more, "namespaces.json") == more
    validate.check_file("namespaces.json", more, "namespaces.json")


@pytest.mark.parametrize("bad", [
    [], {"net": {"up": 1}}, {"net": {"external": ""}}, {"net": {"external": "a\nb"}},
    {"net": {"external": 3}}, {"cgroup": {"root": "/"}}, {"cgroup": []}, {"mnt": {}},
    {"pid": {}}, {"pid": {"ids": {"x": 1}}},
    {"pid": {"ids": {"12": 0}}}, {"pid": {"ids": {"12": 1, "13": 1}}},
    {"uts": {"hostname": "x"}}, {"uts": {"hostname": "x" * 65, "domainname": ""}},
    {"uts": {"hostname": "a\nb", "domainname": ""}}, {"uts": {"hostname": 3, "domainname": ""}},
    {"ipc": {}}, {"ipc": {"sysctls": {"kernel/core_pattern": "1"}}},
    {"ipc": {"sysctls": {"../../etc/passwd": "1"}}},
    {"ipc": {"sysctls": {"kernel/msgmax": "1; rm"}}}, {"ipc": {"sysctls": {"kernel/msgmax": 1}}},
    {"ipc": {"sysctls": {}, "more": 1}},
])
def test_bad_image_refused(bad: Any) -> None:
    with pytest.raises(ImageError, match="namespaces.json"):
        check_image(bad, "namespaces.json")


@pytest.mark.parametrize("bad", [
    {"uts": {"hostname": "box", "domainname": "", "more": 1}}, {"net": []},
    {"pid": {"ids": {"012": 1}}}, {"pid": {"ids": {"12": 1 << 23}}},
    {"ipc": {"sysctls": {"kernel/msgmax": "1" * 100}}},
])
def test_schema_in_validates_table(bad: Any) -> None:
    """validate's table has namespaces.json: its schema, then check_image."""
    validate.check_file("namespaces.json", GOOD, "namespaces.json")
    with pytest.raises(ImageError, match="namespaces.json"):
        validate.check_file("namespaces.json", bad, "namespaces.json")
