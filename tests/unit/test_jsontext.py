"""jsontext: JSON written and read through json's C encoder and scanner, as json does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ckpt import jsontext

VALUES = [{"b": 1, "a": [1, 2.5, None, True, "\u00e9\x00", -(1 << 70)]}, [], {}, "x", 1 << 64,
          {"nested": {"z": [{"y": 1}], "a": "s p a c e"}}]


@pytest.mark.parametrize("value", VALUES)
def test_written_and_read_as_json_does(value: object) -> None:
    text = jsontext.dumps(value)
    assert text == json.dumps(value, sort_keys=True, separators=(",", ":"))
    assert jsontext.loads(text) == value and jsontext.loads(text.encode()) == value
    assert jsontext.loads(f" \n{json.dumps(value, indent=1)}\n ") == value


def test_a_value_json_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsontext.dumps({"a": object()})


@pytest.mark.parametrize("bad", ["", "[1,", "{} x", b"\xff", "[1] [2]", '{"a" 1}', "\ufeff{}"])
def test_bad_text_raises_what_json_raises(bad: str | bytes) -> None:
    with pytest.raises(ValueError) as ours:
        jsontext.loads(bad)
    with pytest.raises(ValueError) as theirs:
        json.loads(bad)
    assert str(ours.value) == str(theirs.value)


def test_neither_json_nor_re_is_imported() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from ckpt import jsontext; "
                          "jsontext.loads(jsontext.dumps({'a': [1, 'b']})); "
                          "print([m for m in ('json', 're') if m in sys.modules])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
