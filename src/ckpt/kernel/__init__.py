"""The Linux interfaces ckpt uses, as typed Python (syscalls, ptrace, /proc, netlink),
knowing nothing of checkpoints: the lowest layer (docs/design.md)."""
