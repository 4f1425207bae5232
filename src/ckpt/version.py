"""ckpt's version, a layer below everything that reports it (the API re-exports it)."""

__version__ = "0.1.0"
