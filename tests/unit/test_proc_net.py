"""The multicast groups of /proc/net/igmp and igmp6, as this kernel prints them."""

from __future__ import annotations

from ckpt.kernel.proc_net import parse_igmp, parse_igmp6

IGMP = (
    "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
    "1\tlo        :     2      V3\n"
    "\t\t\t\t030707EF     1 0:00000000\t\t0\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
    "4\teth0      :     1      V3\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
)
IGMP6 = (
    "1    lo              ff150000000000000000000000070007     1 00000004 0\n"
    "4    eth0            ff0200000000000000000001ff000002     1 00000004 0\n"
)


def test_igmp_groups_by_interface() -> None:
    assert parse_igmp(IGMP) == [(1, "239.7.7.3"), (1, "224.0.0.1"), (4, "224.0.0.1")]


def test_igmp6_groups() -> None:
    assert parse_igmp6(IGMP6) == [(1, "ff15::7:7"), (4, "ff02::1:ff00:2")]


def test_empty_files() -> None:
    assert parse_igmp("Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n") == []
    assert parse_igmp6("") == []
