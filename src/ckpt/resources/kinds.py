"""Every kind of file ckpt knows. Importing this module registers them all with
``files``; the order is the order in which kinds are asked to claim an fd."""

from . import (  # noqa: F401  (each registers its kind on import)
    chrdev,
    epoll,
    eventfd,
    fanotify,
    files_reg,
    inotify,
    memfd,
    pipes,
    signalfd,
    sk_inet,
    sk_unix,
    timerfd,
    tty,
)
