"""Every kind of process state, one module each with both its dump and its restore;
files.py and the registry kinds.py above the file kinds (docs/design.md)."""
