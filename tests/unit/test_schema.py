"""The schemas of the images: each field type refuses what it must, errors name the file
and the field in one line, objects are strict; the image folder's owner check
(StrictModes); and the checks across one process's mappings (no page data outside
private memory, no overlap)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckpt import schema as s
from ckpt.errors import ImageError
from ckpt.images import ImageReader, ImageWriter, untrusted
from ckpt.resources import mem
from ckpt_helpers import run_ckpt

PAGE = 4096


def refused(value: object, field: s.Field) -> str:
    with pytest.raises(ImageError) as e:
        s.check(value, field, "x.json")
    msg = str(e.value)
    assert msg.startswith("x.json: ") and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(("field", "good", "bad"), [
    (s.U32, [0, 1 << 31, (1 << 32) - 1], [-1, 1 << 32, True, 1.0, "1", None]),
    (s.Int(0, 1 << 20, PAGE), [0, PAGE], [1, PAGE + 1, -PAGE]),
    (s.BOOL, [True, False], [0, 1, "true", None]),
    (s.PATH, ["/", "/a/b", "/a b (deleted)", "/a/#123"],
     ["a/b", "/a/../etc", "/a/./b", "/a//b", "/a/", "/a\0b", "", 3]),
    (s.Hex(4), ["", "00ff", "DEADBEEF"], ["abc", "zz", "0011223344", 7]),
    (s.B64(3), ["", "AAAA"], ["A", "AAAA$", "AAAAAAAA"]),
    (s.Str(5, choices=("ab", "cd")), ["ab"], ["ef", "abcdef", 1]),
    (s.Tup(s.U8, s.BOOL), [[1, True]], [[1], [1, True, 2], [256, True], (1, True)]),
    (s.List(s.U8, max=2), [[], [1, 2]], [[1, 2, 3], [-1], {}]),
    (s.Null(s.U8), [None, 3], [-3, "x"]),
    (s.Either(s.U8, s.Str(3)), [3, "abc"], [None, "abcd"]),
    (s.Map(s.U8, key=s.Str(3, pattern="[0-9]+")), [{}, {"12": 1}], [{"ab": 1}, {"1": -1}, []]),
])
def test_field_types(field: s.Field, good: list[object], bad: list[object]) -> None:
    for v in good:
        s.check(v, field, "x.json")
    for v in bad:
        refused(v, field)


def test_objects_are_strict_and_name_the_field() -> None:
    vma = s.Obj(start=s.U64, guards=s.Opt(s.List(s.Tup(s.U64, s.U64))))
    mm = s.Obj(vmas=s.List(vma))
    s.check({"vmas": [{"start": 1}, {"start": 2, "guards": []}]}, mm, "x.json")
    assert refused({"vmas": [{"start": 1}, {"start": -2}]}, mm) == \
        "x.json: vmas[1].start: -2 is out of range [0, 18446744073709551615]"
    assert refused({"vmas": [{"start": 1, "gaurds": []}]}, mm) == \
        "x.json: vmas[0]: unknown field 'gaurds'"
    assert refused({"vmas": [{}]}, mm) == "x.json: vmas[0]: missing field 'start'"
    assert refused({"vmas": [{"start": 1, "guards": [[1, "2"]]}]}, mm) == \
        "x.json: vmas[0].guards[0][1]: not an integer: '2'"
    assert refused([], mm) == "x.json: not an object: []"
    wider = mm.extend(brk=s.U64)
    s.check({"vmas": [], "brk": 3}, wider, "x.json")
    refused({"vmas": []}, wider)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    refused(deep, s.Json(depth=8))
    refused({"a": deep}, s.Obj(a=s.List(s.List(s.U8))))


def _mm(vmas: list[dict], pagemap: list[list[int]], shmem: list | None = None) -> dict:
    return {"vmas": vmas, "pagemap": pagemap, "in_parent": [], "tracking": None,
            "pages_file": "pages-7.img", "shmem": shmem or []}


def _vma(start: int, end: int, kind: str = "anon", shared: bool = False, **more: object
         ) -> dict:
    return {"start": start, "end": end, "prot": 3, "shared": shared, "kind": kind,
            "path": "/bin/x" if kind == "file" else "", "offset": 0, "flags": [], **more}


def test_pages_only_in_private_memory() -> None:
    """A restore never writes page data into a file: pages of a shared file mapping in
    the pagemap are refused, as are overlapping mappings and a pages file of the wrong
    size; private mappings of a file take pages."""
    a, b = 0x10000, 0x20000
    ok = _mm([_vma(a, a + 2 * PAGE), _vma(b, b + PAGE, "file", file={"size": 1, "mtime_ns": 0})],
             [[a, 2], [b, 1]])
    mem.check_image(7, ok, "mm-7.json", 3 * PAGE)
    shared = _mm([_vma(b, b + PAGE, "file", shared=True, file={"size": 1, "mtime_ns": 0})],
                 [[b, 1]])
    with pytest.raises(ImageError, match=r"mm-7.json: pagemap\[0\]: .*never into a file"):
        mem.check_image(7, shared, "mm-7.json", PAGE)
    with pytest.raises(ImageError, match=r"vmas\[1\].start: overlaps"):
        mem.check_image(7, _mm([_vma(a, a + 2 * PAGE), _vma(a + PAGE, b)], []),
                        "mm-7.json", 0)
    with pytest.raises(ImageError, match=r"pagemap: 8192 bytes of pages, but pages-7.img"):
        mem.check_image(7, _mm([_vma(a, a + 2 * PAGE)], [[a, 2]]), "mm-7.json", PAGE)
    with pytest.raises(ImageError, match=r"pagemap\[0\]: pages .* not all in private"):
        mem.check_image(7, _mm([_vma(a, a + PAGE)], [[a, 2]]), "mm-7.json", 2 * PAGE)
    with pytest.raises(ImageError, match=r"pages_file: is not pages-7.img"):
        mem.check_image(7, {**ok, "pages_file": "pages-8.img"}, "mm-7.json", 3 * PAGE)


def test_owner_check_like_sshd_strictmodes(tmp_path: Path) -> None:
    """A folder and files of the trusted owners, writable by them only, through folders
    that are too (or sticky); anything else is named."""
    me = (os.geteuid(),)
    d = tmp_path / "imgs"
    d.mkdir(mode=0o700)
    (d / "inventory.json").write_text("{}")
    os.chmod(d / "inventory.json", 0o600)
    real, why = untrusted(str(d), ["inventory.json", "missing.img"], me)
    assert (real, why) == (str(d), None)
    os.chmod(d / "inventory.json", 0o620)
    assert untrusted(str(d), ["inventory.json"], me)[1] == \
        f"{d}/inventory.json is an image writable by its group"
    os.chmod(d / "inventory.json", 0o600)
    os.chmod(d, 0o707)
    assert untrusted(str(d), [], me)[1] == f"{d} is the image folder writable by all"
    os.chmod(d, 0o700)
    link = tmp_path / "link"
    link.symlink_to(d)
    assert untrusted(str(link), ["inventory.json"], me) == (str(d), None)
    (d / "sub").symlink_to("/")
    assert untrusted(str(d / "sub" / "x"), [], me)[0] == str(d / "sub" / "x")  # missing
    assert "of user" in str(untrusted(str(d), [], (os.geteuid() + 1,))[1])


def test_unreadable_image_is_one_line(tmp_path: Path) -> None:
    """An image that cannot be read (here a folder in its place) is an ImageError naming
    it, for ckpt show as for a restore, not a traceback."""
    d = tmp_path / "imgs"
    w = ImageWriter(str(d))
    w.write_json("mm-7.json", {})
    w.finish({"type": "dump", "tasks": []})
    os.unlink(d / "inventory.json")
    os.mkdir(d / "inventory.json")
    with pytest.raises(ImageError, match=r"inventory.json: cannot be read \(Is a directory\)$"):
        ImageReader(str(d))
    res = run_ckpt("show", d)
    assert res.returncode == 1 and res.stderr == \
        f"ckpt show: error: {d}/inventory.json: cannot be read (Is a directory)\n"


def test_show_one_file_checks_its_schema(tmp_path: Path) -> None:
    """``ckpt show FILE`` checks the file against the schema its name says."""
    d = tmp_path / "imgs"
    w = ImageWriter(str(d))
    w.write_json("files.json", {"1": {"kind": "eventfd", "flags": 2, "count": -1,
                                      "semaphore": False}})
    w.write_json("fds-7.json", [{"fd": 3, "file": "1", "cloexec": "no"}])
    w.finish({"type": "dump", "tasks": []})
    for name, why in (("files.json", "1: count: -1 is out of range [0, 18446744073709551615]"),
                      ("fds-7.json", "[0].cloexec: not true or false: 'no'")):
        res = run_ckpt("show", d / name)
        assert res.returncode == 1 and res.stderr == \
            f"ckpt show: error: {d / name}: {why}\n", res.stderr


@pytest.mark.parametrize("pattern", sorted(s._PLAIN_PATTERNS))
def test_patterns_tested_without_a_regex_say_what_the_regex_says(pattern: str) -> None:
    import random
    import re
    regex, test = re.compile(pattern), s._PLAIN_PATTERNS[pattern]
    rnd = random.Random(12)
    alphabet = "pages-.img0123456789aZ_\u00e9\u0663/\n "
    for _ in range(20000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))
        value = rnd.choice(["", "pages-"]) + value + rnd.choice(["", ".img"])
        assert bool(regex.fullmatch(value)) == bool(test(value)), value
    field = s.Str(pattern=pattern)
    with pytest.raises(s.Bad, match=re.escape(f"is not of the form {pattern}")):
        field.check("-")
