"""Helpers shared by the benchmark scripts."""

import os

from tfllm import files


def write_atomically(path, text):
    """Write `text` to `path` (its folder made if needed), so a killed run leaves no half table."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.write_atomically(path, text)
