#!/usr/bin/env python
# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Write the bundles' configs from their one source, ``bundles/_source``.

    python scripts/render_bundles.py            # write bundles/<name>/configs/*.json and logging.conf
    python scripts/render_bundles.py --check    # exit 1, listing the files that differ from their rendering
    python scripts/render_bundles.py --check --diff

Each ``bundles/_source/<name>.py`` (other than ``bundle_template.py``) defines ``BUNDLE``, the parameters of
``bundles/<name>``; ``bundle_template.py`` turns them into train.json, evaluate.json, inference.json,
multi_gpu_train.json and multi_gpu_evaluate.json, and ``bundles/_source/logging.conf`` is copied. The config
fragments a bundle lists in ``Bundle.fragments`` are copied from the repository's ``configs/`` (their one source)
into its ``configs/``, with a first line that says so, so that the commands of its README run from the bundle folder
alone. metadata.json and docs/ are written by hand, per bundle. JSON is written in the MONAI model zoo's format, what
its pre-commit hook ``pretty-format-json --indent=4 --no-sort-keys`` writes (``check_bundles.format_json``): 4-space
indents, keys in their order, non-ASCII characters escaped, one newline at the end.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # check_bundles, beside this file, when imported elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_bundles import format_json  # noqa: E402 - the one implementation of the model zoo's JSON format

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SOURCE = BUNDLES / "_source"
#: the config fragments (configs/*.yaml), the one source of the copies in the bundles that list them
FRAGMENTS = REPO / "configs"
TEMPLATE = "bundle_template"
#: files copied unchanged from the source folder into every bundle's configs/
COPIED = ("logging.conf",)
#: configs/ files written by hand, per bundle
HAND_WRITTEN = ("metadata.json",)


def fragment_header(name: str) -> str:
    """The first line of a fragment's copy in a bundle."""
    return f"# A copy of configs/{name} of the monai-unetpp repository (scripts/render_bundles.py): edit that one.\n"


def load_source(source: Path) -> tuple[Any, dict[str, Any]]:
    """The template module and the ``BUNDLE`` of every parameter file in ``source``, by bundle name (file stem)."""
    names = sorted(p.stem for p in source.glob("*.py") if p.stem != TEMPLATE and not p.stem.startswith("_"))
    sys.path.insert(0, str(source))  # the parameter files import bundle_template
    write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ among the sources
    try:
        for name in (TEMPLATE, *names):  # fresh modules: a second call sees edited sources
            sys.modules.pop(name, None)
        template = importlib.import_module(TEMPLATE)
        return template, {name: importlib.import_module(name).BUNDLE for name in names}
    finally:
        sys.path.remove(str(source))
        sys.dont_write_bytecode = write_bytecode


def render(source: Path, bundles: Path, fragments: Path | None = None) -> dict[Path, str]:
    """Every rendered file, by path, and its text (the fragments' copies from ``fragments``, default FRAGMENTS)."""
    fragments = FRAGMENTS if fragments is None else fragments
    template, source_bundles = load_source(source)
    files: dict[Path, str] = {}
    for name, bundle in source_bundles.items():
        configs = bundles / name / "configs"
        for filename, config in template.configs(bundle).items():
            files[configs / filename] = format_json(config)
        for filename in COPIED:
            files[configs / filename] = (source / filename).read_text(encoding="utf-8")
        for filename in bundle.fragments:
            if not (fragments / filename).is_file():
                raise FileNotFoundError(f"{name}: fragment {filename} is not in {_shown(fragments)}")
            text = (fragments / filename).read_text(encoding="utf-8")
            files[configs / filename] = fragment_header(filename) + text
    return files


def stale(files: dict[Path, str], bundles: Path) -> list[Path]:
    """Config files of the bundles that are neither rendered nor written by hand, and bundles without a source."""
    rendered = {path.parent.parent for path in files}
    found = []
    for configs in sorted(bundles.glob("*/configs")):
        if configs.parent not in rendered:
            found.append(configs.parent)
            continue
        found += [
            path
            for path in sorted(configs.iterdir())
            if path.is_file() and path not in files and path.name not in HAND_WRITTEN
        ]
    return found


def differences(files: dict[Path, str], bundles: Path) -> list[Path]:
    """The rendered files whose committed text differs (or that are missing), and the stale ones."""
    changed = [path for path, text in files.items() if not path.is_file() or path.read_bytes() != text.encode()]
    return changed + stale(files, bundles)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    parser.add_argument("--diff", action="store_true", help="with --check: print the differences")
    args = parser.parse_args(argv)

    files = render(SOURCE, BUNDLES, FRAGMENTS)
    changed = differences(files, BUNDLES)
    if args.check:
        for path in changed:
            print(f"{_shown(path)}: {'differs from its rendering' if path in files else 'stale: it has no source'}")
            if args.diff and path in files:
                old = path.read_text(encoding="utf-8").splitlines(True) if path.is_file() else []
                new = files[path].splitlines(True)
                sys.stdout.writelines(difflib.unified_diff(old, new, _shown(path), f"{_shown(path)} (rendered)"))
        if changed:
            print("run `python scripts/render_bundles.py` and commit the result (stale files: remove or add a source)")
        return 1 if changed else 0
    for path, text in files.items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {_shown(path)}")
    for path in changed:
        if path not in files:
            print(f"warning: {_shown(path)} is stale: it has no source in {_shown(SOURCE)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
