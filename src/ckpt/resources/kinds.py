"""Every kind of file ckpt knows. Importing this module registers them all with
``files``; the order is the order in which kinds are asked to claim an fd."""

from . import (  # noqa: F401  (each registers its kind on import)
    chrdev,
    files_reg,
    pipes,
    sk_unix,
    tty,
)
