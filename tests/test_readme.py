"""The README's usage example runs as printed."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_usage_example_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["accurate"].shape == scope["fast"].shape == (2, 3, 48, 40, 32)
    assert scope["small"].depth == 2
