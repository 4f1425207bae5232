"""namespaces.json as a restore reads it: the names and sysctls of the tree's own uts and
ipc namespaces, anything else refused with the file named."""

from __future__ import annotations

from typing import Any

import pytest

from ckpt.errors import ImageError
from ckpt.resources.treens import check_image

GOOD = {"uts": {"hostname": "box", "domainname": "(none)"},
        "ipc": {"sysctls": {"kernel/msgmax": "8192", "kernel/sem": "32000 1024000000 500 32000"}}}


def test_good_image_passes() -> None:
    assert check_image(GOOD, "namespaces.json") == GOOD
    assert check_image({}, "namespaces.json") == {}


@pytest.mark.parametrize("bad", [
    [], {"net": {"up": 1}}, {"mnt": {}}, {"pid": {}}, {"pid": {"ids": {"x": 1}}},
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
