"""Which keyrings of /proc/keys a process may have joined, and how the dump tells a
possessed one (keyring.py): pure logic, no root."""

from ckpt.resources import keyring

KEYS = """\
0342277f I------     1 perm 1f030000     0     0 keyring   .dns_resolver: empty
23c95481 I--Q---     4 perm 1f3f0000     0 65534 keyring   _uid_ses.0: 1
32540f23 I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: empty
1a2b3c4d I--Q---     2 perm 3f1b0000     0     0 keyring   zdtm ring: a: 1
1a2b3c4e I--Q---     1 perm 3f030000  1000  1000 keyring   _ses: empty
1a2b3c4f I--Q---     1 perm 3f3b0000     0     0 user      zdtm-key: 6
"""


def test_only_keyrings_a_process_may_have_joined() -> None:
    rings = keyring._shown(KEYS)
    assert [(k.serial, k.name, k.uid, k.perm) for k in rings] == [
        (0x1a2b3c4d, "zdtm ring: a", 0, 0x3f1b0000), (0x1a2b3c4e, "_ses", 1000, 0x3f030000)]


def test_probe_is_what_only_a_possessor_may_do() -> None:
    ring = keyring.Keyring(7, 0x3f1b0000, 0, 0, "r")  # the user may view, read, search
    assert ring.probe(0, 0, 100) == (keyring.KEYCTL_SETPERM, 7, 0x3f1b0000)
    assert ring.probe(5, 5, 100)[0] == keyring.KEYCTL_DESCRIBE  # others see nothing
    anon = keyring.Keyring(8, 0x3f030000, 1000, 1000, "_ses")
    assert anon.probe(1000, 1000, 100) == (keyring.KEYCTL_SEARCH, 8, 100, 105, 0)
    assert keyring.Keyring(9, 0x3f3f0000, 0, 0, "r").probe(0, 0, 100) is None


def test_possessed_results() -> None:
    assert keyring.possessed(0) and keyring.possessed(-126)  # ENOKEY: searched
    assert not keyring.possessed(-13)  # EACCES
