"""What `pip install -e .` puts on the import path: tfllm and its programs, nothing else."""

import os
import subprocess
import sys

import pytest


def python_outside_checkout(tmp_path, code):
    # PYTHONPATH would put the checkout back on the path; an installed package must not need it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", ["trainers", "export"])
def test_no_top_level_program_package_is_installed(tmp_path, name):
    out = python_outside_checkout(tmp_path, f"import {name}")
    assert out.returncode == 1
    assert f"No module named '{name}'" in out.stderr


def test_the_programs_install_under_tfllm(tmp_path):
    out = python_outside_checkout(
        tmp_path, "import importlib.util as u; print(u.find_spec('tfllm.trainers.train') is not None, "
                  "u.find_spec('tfllm.export.server') is not None)")
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]
