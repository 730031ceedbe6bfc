"""Helpers shared by the benchmark scripts."""

import os


def write_atomically(path, text):
    """Write `text` to `path` through a temporary file, so a killed run leaves no half table."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)
