"""The unit tier: fast tests of pure logic that need neither root nor target processes.

Run it alone with ``.venv/bin/python -m pytest tests/unit``. (This file makes the
tier a package, so a module here may share its name with one in tests/.)
"""
