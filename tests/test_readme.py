"""The README's usage example runs as printed."""

from __future__ import annotations

import re

import torch
from conftest import REPO


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_readme_usage_example_runs():
    scope: dict = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), scope)
    assert scope["accurate"].shape == scope["fast"].shape == (2, 3, 48, 40, 32)
    assert scope["small"].depth == 2


def test_readme_migration_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = [block for block in python_blocks() if "from_basic_unetplusplus" in block]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scope["net"].eval()(x), scope["monai_net"].eval()(x)[-1], rtol=1e-4, atol=1e-5)
