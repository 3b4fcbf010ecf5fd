"""``make bench``: routegate measured against the references a user would pick instead.

Run with ``.venv/bin/python -m bench`` (``--help`` for the knobs).  Everything it starts
listens on 127.0.0.1 only, runs for a bounded time and is stopped on exit.
"""
