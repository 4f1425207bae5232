"""Sizes on the command line (``--ghost-limit``): bytes, or K, M, G as criu takes them."""

from __future__ import annotations

import argparse

import pytest

from ckpt.flags import size as _size


@pytest.mark.parametrize(("text", "size"), [
    ("1048576", 1 << 20),
    ("0", 0),
    ("512K", 512 << 10),
    ("512k", 512 << 10),
    ("64M", 64 << 20),
    ("1M", 1 << 20),
    ("2G", 2 << 30),
    (" 64M\n", 64 << 20),
])
def test_sizes(text: str, size: int) -> None:
    assert _size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1.5M", "-1", "64MB", "1T", "0x10", "64 M",
                                  "one"])
def test_bad_sizes(text: str) -> None:
    """Refused with a message quoting the input and showing the accepted forms."""
    with pytest.raises(argparse.ArgumentTypeError) as e:
        _size(text)
    assert repr(text) in str(e.value) and "512K" in str(e.value)
