"""criu's RPC messages (proto2), written down from its public documentation:
each message's fields with criu's numbers and types, for wire.py.

Only numbers and types must match criu's; the names are the ones criu's
clients use (runc's ``Opts.ImagesDirFd`` is ``images_dir_fd`` here).
"""

from __future__ import annotations


class Field:
    """One field of a message (a plain class: typing's NamedTuple costs each command
    the import of typing)."""

    __slots__ = ("name", "type", "repeated", "required")

    def __init__(self, name: str, type: str,  # noqa: A002
                 repeated: bool = False, required: bool = False):
        self.name = name
        self.type = type  # int32, uint32, bool, string, enum, or the name of a message
        self.repeated = repeated
        self.required = required

    def __repr__(self) -> str:
        return (f"Field({self.name!r}, {self.type!r}, repeated={self.repeated}, "
                f"required={self.required})")


def _msg(*fields: tuple[int, str, str, str]) -> dict[int, Field]:
    """(number, label, type, name) rows, label one of "req", "opt", "rep"."""
    return {n: Field(name, typ, repeated=label == "rep", required=label == "req")
            for n, label, typ, name in fields}


# Request and response types (criu_req_type).
EMPTY, DUMP, RESTORE, CHECK, PRE_DUMP, PAGE_SERVER, NOTIFY = 0, 1, 2, 3, 4, 5, 6
CPUINFO_DUMP, CPUINFO_CHECK, FEATURE_CHECK, VERSION = 7, 8, 9, 10
WAIT_PID, PAGE_SERVER_CHLD, SINGLE_PRE_DUMP = 11, 12, 13
REQUEST_NAMES = {
    EMPTY: "EMPTY", DUMP: "DUMP", RESTORE: "RESTORE", CHECK: "CHECK", PRE_DUMP: "PRE_DUMP",
    PAGE_SERVER: "PAGE_SERVER", NOTIFY: "NOTIFY", CPUINFO_DUMP: "CPUINFO_DUMP",
    CPUINFO_CHECK: "CPUINFO_CHECK", FEATURE_CHECK: "FEATURE_CHECK", VERSION: "VERSION",
    WAIT_PID: "WAIT_PID", PAGE_SERVER_CHLD: "PAGE_SERVER_CHLD",
    SINGLE_PRE_DUMP: "SINGLE_PRE_DUMP",
}

# criu_cg_mode values, as --manage-cgroups names them (CG_MODE_DEFAULT: criu's, soft).
CG_MODES = {0: "ignore", 1: "none", 2: "props", 3: "soft", 4: "full", 5: "strict", 6: "soft"}

MESSAGES: dict[str, dict[int, Field]] = {
    "page_server_info": _msg(
        (1, "opt", "string", "address"), (2, "opt", "int32", "port"),
        (3, "opt", "int32", "pid"), (4, "opt", "int32", "fd")),
    "veth_pair": _msg((1, "req", "string", "if_in"), (2, "req", "string", "if_out")),
    "ext_mount_map": _msg((1, "req", "string", "key"), (2, "req", "string", "val")),
    "join_namespace": _msg(
        (1, "req", "string", "ns"), (2, "req", "string", "ns_file"),
        (3, "opt", "string", "extra_opt")),
    "inherit_fd": _msg((1, "req", "string", "key"), (2, "req", "int32", "fd")),
    "cgroup_root": _msg((1, "opt", "string", "ctrl"), (2, "req", "string", "path")),
    "unix_sk": _msg((1, "req", "uint32", "inode")),
    "opts": _msg(
        (1, "req", "int32", "images_dir_fd"),
        (2, "opt", "int32", "pid"),
        (3, "opt", "bool", "leave_running"),
        (4, "opt", "bool", "ext_unix_sk"),
        (5, "opt", "bool", "tcp_established"),
        (6, "opt", "bool", "evasive_devices"),
        (7, "opt", "bool", "shell_job"),
        (8, "opt", "bool", "file_locks"),
        (9, "opt", "int32", "log_level"),
        (10, "opt", "string", "log_file"),
        (11, "opt", "page_server_info", "ps"),
        (12, "opt", "bool", "notify_scripts"),
        (13, "opt", "string", "root"),
        (14, "opt", "string", "parent_img"),
        (15, "opt", "bool", "track_mem"),
        (16, "opt", "bool", "auto_dedup"),
        (17, "opt", "int32", "work_dir_fd"),
        (18, "opt", "bool", "link_remap"),
        (19, "rep", "veth_pair", "veths"),
        (20, "opt", "uint32", "cpu_cap"),
        (21, "opt", "bool", "force_irmap"),
        (22, "rep", "string", "exec_cmd"),
        (23, "rep", "ext_mount_map", "ext_mnt"),
        (24, "opt", "bool", "manage_cgroups"),
        (25, "rep", "cgroup_root", "cg_root"),
        (26, "opt", "bool", "rst_sibling"),
        (27, "rep", "inherit_fd", "inherit_fd"),
        (28, "opt", "bool", "auto_ext_mnt"),
        (29, "opt", "bool", "ext_sharing"),
        (30, "opt", "bool", "ext_masters"),
        (31, "rep", "string", "skip_mnt"),
        (32, "rep", "string", "enable_fs"),
        (33, "rep", "unix_sk", "unix_sk_ino"),
        (34, "opt", "enum", "manage_cgroups_mode"),
        (35, "opt", "uint32", "ghost_limit"),
        (36, "rep", "string", "irmap_scan_paths"),
        (37, "rep", "string", "external"),
        (38, "opt", "uint32", "empty_ns"),
        (39, "rep", "join_namespace", "join_ns"),
        (41, "opt", "string", "cgroup_props"),
        (42, "opt", "string", "cgroup_props_file"),
        (43, "rep", "string", "cgroup_dump_controller"),
        (44, "opt", "string", "freeze_cgroup"),
        (45, "opt", "uint32", "timeout"),
        (46, "opt", "bool", "tcp_skip_in_flight"),
        (47, "opt", "bool", "weak_sysctls"),
        (48, "opt", "bool", "lazy_pages"),
        (49, "opt", "int32", "status_fd"),
        (50, "opt", "bool", "orphan_pts_master"),
        (51, "opt", "string", "config_file"),
        (52, "opt", "bool", "tcp_close"),
        (53, "opt", "string", "lsm_profile"),
        (54, "opt", "string", "tls_cacert"),
        (55, "opt", "string", "tls_cacrl"),
        (56, "opt", "string", "tls_cert"),
        (57, "opt", "string", "tls_key"),
        (58, "opt", "bool", "tls"),
        (59, "opt", "bool", "tls_no_cn_verify"),
        (60, "opt", "string", "cgroup_yard"),
        (61, "opt", "enum", "pre_dump_mode"),
        (62, "opt", "int32", "pidfd_store_sk"),
        (63, "opt", "string", "lsm_mount_context"),
        (64, "opt", "enum", "network_lock"),
        (65, "opt", "bool", "mntns_compat_mode"),
        (66, "opt", "bool", "skip_file_rwx_check"),
        (67, "opt", "bool", "unprivileged"),
        (68, "opt", "string", "images_dir"),
        (69, "opt", "bool", "leave_stopped"),
        (70, "opt", "bool", "display_stats"),
        (71, "opt", "bool", "log_to_stderr"),
        (72, "opt", "bool", "allow_uprobes"),
        (73, "opt", "bool", "ghost_fiemap"),
        (74, "opt", "enum", "file_validation_method"),
    ),
    "dump_resp": _msg((1, "opt", "bool", "restored")),
    "restore_resp": _msg((1, "req", "int32", "pid")),
    "notify": _msg((1, "opt", "string", "script"), (2, "opt", "int32", "pid")),
    "features": _msg(
        (1, "opt", "bool", "mem_track"), (2, "opt", "bool", "lazy_pages"),
        (3, "opt", "bool", "pidfd_store")),
    "req": _msg(
        (1, "req", "enum", "type"),
        (2, "opt", "opts", "opts"),
        (3, "opt", "bool", "notify_success"),
        (4, "opt", "bool", "keep_open"),
        (5, "opt", "features", "features"),
        (6, "opt", "uint32", "pid"),
    ),
    "version": _msg(
        (1, "req", "int32", "major_number"), (2, "req", "int32", "minor_number"),
        (3, "opt", "string", "gitid"), (4, "opt", "int32", "sublevel"),
        (5, "opt", "int32", "extra"), (6, "opt", "string", "name")),
    "resp": _msg(
        (1, "req", "enum", "type"),
        (2, "req", "bool", "success"),
        (3, "opt", "dump_resp", "dump"),
        (4, "opt", "restore_resp", "restore"),
        (5, "opt", "notify", "notify"),
        (6, "opt", "page_server_info", "ps"),
        (7, "opt", "int32", "cr_errno"),
        (8, "opt", "features", "features"),
        (9, "opt", "string", "cr_errmsg"),
        (10, "opt", "version", "version"),
        (11, "opt", "int32", "status"),
    ),
    # criu's statistics files (stats-dump, stats-restore in the work folder), which
    # podman and go-criu read: times in microseconds, memory in pages.
    "dump_stats_entry": _msg(
        (1, "req", "uint32", "freezing_time"), (2, "req", "uint32", "frozen_time"),
        (3, "req", "uint32", "memdump_time"), (4, "req", "uint32", "memwrite_time"),
        (5, "req", "uint64", "pages_scanned"), (6, "req", "uint64", "pages_skipped_parent"),
        (7, "req", "uint64", "pages_written"), (9, "req", "uint64", "pages_lazy")),
    "restore_stats_entry": _msg(
        (1, "req", "uint64", "pages_compared"), (2, "req", "uint64", "pages_skipped_cow"),
        (3, "req", "uint32", "forking_time"), (4, "req", "uint32", "restore_time"),
        (5, "opt", "uint64", "pages_restored")),
    "stats_entry": _msg(
        (1, "opt", "dump_stats_entry", "dump"), (2, "opt", "restore_stats_entry", "restore")),
}
