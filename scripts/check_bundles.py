#!/usr/bin/env python
# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Run the MONAI model zoo's generic checks on bundles, as its CI runs them on a pull request.

    python scripts/check_bundles.py                          # every bundle in bundles/
    python scripts/check_bundles.py unetpp_3d_segmentation   # one, by name, or any bundle folder by its path
    python scripts/check_bundles.py --allow-untrained        # a bundle without models/model.pt is checked untrained
    python scripts/check_bundles.py --since origin/main      # a bundle changed since then needs a new version

One line per check and bundle, ``PASS`` or ``FAIL`` with the reason; the exit status is 1 when a check fails.
The checks follow the model zoo's ``ci/verify_bundle.py``, ``ci/get_bundle_requirements.py`` and
``.pre-commit-config.yaml`` (Project-MONAI/model-zoo), written anew here:

- ``files``: ``configs/metadata.json``, ``LICENSE`` and ``models/model.pt`` (necessary, as for the model zoo's
  ``verify_bundle``), ``configs/inference.json`` (or .yaml/.yml), ``docs/README.md`` (the model zoo's README
  template). With ``--allow-untrained`` (a bundle in development) a missing ``models/model.pt`` passes and the other
  checks run with an untrained one built from the bundle's own ``network_def``.
- ``metadata_schema``: ``monai.bundle.verify_metadata`` against the schema that ``schema`` names (the copy in
  ``tests/bundle_schema/``, offline, or ``--schema``; downloaded only when there is no copy).
- ``version``: ``version`` and ``changelog`` present, every key a semantic version, ``version`` the newest;
  ``monai_version``, ``pytorch_version``, ``numpy_version`` and ``required_packages_version`` present. With
  ``--since REF``: a bundle whose files changed since ``REF`` has a newer version than it had there (the model
  zoo refuses a changed bundle whose version is already released).
- ``requirements``: the packages the model zoo's CI would install from the metadata (``monai==monai_version``,
  ``torch==pytorch_version``, ...) are installed here; other installed versions are noted, and the
  ``monai-unetpp`` version must be the installed package's.
- ``net_in_out``: ``monai.bundle.verify_net_in_out`` of ``network_def`` in the inference config.
- ``ckpt_export``: ``monai.bundle.ckpt_export`` of ``models/model.pt`` to TorchScript in a temporary folder, reloaded
  with its metadata and config, and its output compared with the checkpoint's (a shipped ``models/model.ts`` is
  loaded too).
- ``json_format``: every JSON file as the pre-commit hook ``pretty-format-json --no-sort-keys --indent=4`` writes it.
- ``precommit``: the model zoo's other pre-commit hooks that apply to bundle files: end-of-file-fixer,
  trailing-whitespace, mixed-line-ending (LF only), check-yaml, check-case-conflict,
  check-executables-have-shebangs, check-added-large-files (1024 KB; ``models/`` files: the zoo's 25 MB limit).

The bundle is never written to: the checks run on a temporary copy of the files it ships (in a git checkout the
tracked and not-ignored files, elsewhere all but the run outputs ``data/``, ``eval/``, ``outputs/``, ``runs/``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SCHEMAS = REPO / "tests" / "bundle_schema"
#: the network and the inference config that the model zoo's verify_bundle.py checks by default
NET_ID = "network_def"
INFERENCE = "inference"
#: files the model zoo requires, and those it prefers (configs/inference.* and models/model.pt are checked apart)
NECESSARY = ("configs/metadata.json", "LICENSE")
README = "docs/README.md"
WEIGHTS = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
#: what a local run writes into a bundle folder (git-ignored in the repository): not part of the bundle
OUTPUTS = ("data", "eval", "outputs", "runs")
#: in models/, only the weights are part of a bundle (not last.ckpt, training.lock or temporary files)
SHIPPED_MODELS = (WEIGHTS, TORCHSCRIPT)
METADATA_KEYS = ("monai_version", "pytorch_version", "numpy_version", "required_packages_version")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
#: pre-commit's check-added-large-files --maxkb=1024, and the model zoo's limit for any one file
MAX_KB = 1024
MAX_MB_MODELS = 25
TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".txt", ".conf", ".py", ".sh", ".cfg", ".toml", ".csv"}
TEXT_NAMES = {"LICENSE"}
#: the package the bundles run on: its metadata pin must be the installed version
PACKAGE = "monai-unetpp"
UNTRAINED = "model.pt: none shipped, checked with an untrained one"
#: SHA-256 of the published schemas that tests/bundle_schema holds, checked before the schema is used
SCHEMA_SHA256 = {"meta_schema_20240725.json": "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"}


class CheckFailed(Exception):
    """A check's failure; the message is the reason printed."""


def format_json(obj: Any) -> str:
    """``obj`` as ``pretty-format-json --indent=4 --no-sort-keys`` writes it: ``json.dumps(obj, indent=4)`` with the
    hook's default ``ensure_ascii=True``, keys in their order, and one newline."""
    return json.dumps(obj, indent=4, ensure_ascii=True) + "\n"


def json_format_problem(path: Path) -> str | None:
    """Why ``path`` is not as the model zoo's pre-commit hook ``pretty-format-json`` leaves it, or None."""
    raw = path.read_bytes()
    if b"\r" in raw:
        return "CR line endings"
    try:
        # as the hook reads it (keeping the key order; a duplicated key keeps its last value, so the text differs)
        pretty = format_json(json.loads(raw.decode("utf-8"), object_pairs_hook=dict))
    except (UnicodeDecodeError, ValueError) as e:
        return f"not JSON: {e}"
    if raw.decode("utf-8") != pretty:
        return "not as `pretty-format-json --no-sort-keys --indent=4` writes it (4-space indents, one final newline)"
    return None


def semver(version: Any) -> tuple[int, int, int] | None:
    match = SEMVER.match(version) if isinstance(version, str) else None
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def shipped_files(bundle: Path) -> list[str]:
    """The files of the bundle, relative to it: in a git work tree what a commit would hold (tracked and not
    ignored), elsewhere every file except the run outputs; in ``models/`` only the weights."""
    names: list[str] | None = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        inside = subprocess.run(
            ["git", "-C", str(bundle), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
        )
        if inside.returncode == 0 and inside.stdout.strip() == "true":
            listed = subprocess.run(
                ["git", "-C", str(bundle), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
                capture_output=True,
                check=True,
            )
            names = sorted({n for n in listed.stdout.decode().split("\0") if n and (bundle / n).is_file()})
    if names is None:
        names = sorted(str(p.relative_to(bundle).as_posix()) for p in bundle.rglob("*") if p.is_file())
        names = [n for n in names if n.split("/", 1)[0] not in OUTPUTS and "__pycache__" not in n.split("/")]
    return [n for n in names if not n.startswith("models/") or n in SHIPPED_MODELS]


@dataclass
class Options:
    require_weights: bool = True
    since: str | None = None
    schema: Path | None = None
    device: str | None = None


@dataclass
class Bundle:
    """A bundle under check: its folder, the files it ships, and a temporary copy to run things in."""

    source: Path
    copy: Path
    files: list[str]
    options: Options
    metadata: dict = field(default_factory=dict)
    metadata_error: str | None = None
    untrained: bool = False
    weights_error: str | None = None

    @property
    def name(self) -> str:
        return self.source.name

    def config(self, stem: str) -> str | None:
        for suffix in ("json", "yaml", "yml"):
            if f"configs/{stem}.{suffix}" in self.files:
                return f"configs/{stem}.{suffix}"
        return None

    def inference_config(self) -> Path:
        name = self.config(INFERENCE)
        if name is None:
            raise CheckFailed("no configs/inference.json (.yaml, .yml)")
        return self.copy / name

    @property
    def meta_file(self) -> Path:
        return self.copy / "configs" / "metadata.json"

    def require_metadata(self) -> dict:
        if self.metadata_error:
            raise CheckFailed(self.metadata_error)
        return self.metadata


@contextlib.contextmanager
def quiet_monai() -> Iterator[None]:
    """MONAI's bundle scripts log their arguments at INFO level: keep the check's output to its own lines."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == "monai"]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def parsed_network(bundle: Bundle):
    """The bundle's ``network_def`` as its inference config builds it, with ``bundle_root`` at the copy."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle.inference_config()))
    parser.read_meta(str(bundle.meta_file))
    parser["bundle_root"] = str(bundle.copy)
    return parser.get_parsed_content(NET_ID)


def prepare(source: Path, workdir: Path, options: Options) -> Bundle:
    """Copy the bundle's files into ``workdir`` and, when it ships no weights, write untrained ones there."""
    files = shipped_files(source)
    copy = workdir / source.name
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, copy / name)
    copy.mkdir(parents=True, exist_ok=True)
    bundle = Bundle(source=source, copy=copy, files=files, options=options)
    try:
        bundle.metadata = json.loads((source / "configs" / "metadata.json").read_text(encoding="utf-8"))
        if not isinstance(bundle.metadata, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        bundle.metadata_error = f"configs/metadata.json: {e}"
    if WEIGHTS not in files:
        bundle.untrained = True
        try:
            import torch

            torch.manual_seed(0)
            with quiet_monai():
                net = parsed_network(bundle)
            (copy / "models").mkdir(exist_ok=True)
            torch.save(net.state_dict(), copy / WEIGHTS)
        except Exception as e:  # noqa: BLE001 - reported by the checks that need the weights
            bundle.weights_error = f"no untrained model.pt could be built from {NET_ID}: {type(e).__name__}: {e}"
    return bundle


# ---------------------------------------------------------------------------------------------------- the checks


def check_files(bundle: Bundle) -> str:
    missing = [name for name in NECESSARY if name not in bundle.files]
    if bundle.config(INFERENCE) is None:
        missing.append("configs/inference.json (or .yaml, .yml)")
    if README not in bundle.files:
        missing.append(README)
    if bundle.untrained and bundle.options.require_weights:
        missing.append(f"{WEIGHTS} (none shipped; --allow-untrained checks it with an untrained one)")
    if missing:
        raise CheckFailed("missing " + ", ".join(missing))
    found = [*NECESSARY, bundle.config(INFERENCE), README]
    if not bundle.untrained:
        size = (bundle.source / WEIGHTS).stat().st_size / 2**20
        return ", ".join([*found, f"{WEIGHTS} ({size:.1f} MB)"])
    if bundle.weights_error:
        raise CheckFailed(f"{', '.join(found)}; {bundle.weights_error}")
    return f"{', '.join(found)}; {UNTRAINED}"


def check_metadata_schema(bundle: Bundle) -> str:
    metadata = bundle.require_metadata()
    url = metadata.get("schema")
    if not isinstance(url, str) or not url:
        raise CheckFailed("configs/metadata.json has no `schema` URL")
    target = bundle.copy / "eval" / "schema.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = url.rsplit("/", 1)[-1]
    local = bundle.options.schema or SCHEMAS / schema
    digest = SCHEMA_SHA256.get(schema)
    if local.is_file():
        shutil.copyfile(local, target)  # verify_metadata downloads only into a missing file
        origin = f"local copy {local.relative_to(REPO) if local.is_relative_to(REPO) else local}"
    else:
        origin = f"downloaded from {url}"
    from monai.bundle import verify_metadata

    try:
        with quiet_monai():
            with warnings.catch_warnings():  # "no hash value provided" where there is no known digest
                warnings.simplefilter("ignore", UserWarning)
                verify_metadata(
                    meta_file=str(bundle.meta_file),
                    filepath=str(target),
                    hash_val=digest,
                    hash_type="sha256" if digest else None,
                )
    except Exception as e:  # noqa: BLE001 - ValueError with the schema's message, or a failed download
        raise CheckFailed(f"{type(e).__name__}: {e}") from e
    return f"valid against {schema} ({origin}{', SHA-256 checked' if digest else ''})"


def _git(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(bundle), *args], capture_output=True, text=True)


def _version_at(bundle: Path, ref: str) -> tuple[bool, str | None]:
    """Whether the bundle's files changed since ``ref``, and its version there (None: no bundle there)."""
    top = _git(bundle, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise CheckFailed(f"--since {ref}: {bundle} is not in a git work tree")
    if _git(bundle, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise CheckFailed(f"--since {ref}: no such commit")
    relative = bundle.resolve().relative_to(Path(top.stdout.strip()).resolve()).as_posix()
    old = _git(bundle, "show", f"{ref}:{relative}/configs/metadata.json")
    if old.returncode != 0:
        return True, None
    changed = _git(bundle, "diff", "--name-only", ref, "--", ".").stdout.strip()
    untracked = _git(bundle, "ls-files", "--others", "--exclude-standard", "--", ".").stdout.strip()
    try:
        version = json.loads(old.stdout).get("version")
    except ValueError:
        version = None
    return bool(changed or untracked), version


def check_version(bundle: Bundle) -> str:
    metadata = bundle.require_metadata()
    for key in ("version", "changelog"):
        if key not in metadata:
            raise CheckFailed(f"`{key}` is missing in configs/metadata.json")
    version, changelog = metadata["version"], metadata["changelog"]
    if not isinstance(changelog, dict) or not changelog:
        raise CheckFailed("`changelog` is not a non-empty object of version: description")
    if semver(version) is None:
        raise CheckFailed(f"`version` {version!r} is not a semantic version MAJOR.MINOR.PATCH")
    bad = [key for key in changelog if semver(key) is None]
    if bad:
        raise CheckFailed(f"changelog keys that are not semantic versions: {bad}")
    empty = [key for key, text in changelog.items() if not isinstance(text, str) or not text.strip()]
    if empty:
        raise CheckFailed(f"changelog entries without a description: {empty}")
    if version not in changelog:
        raise CheckFailed(f"version {version} is missing in `changelog`")
    newest = max(changelog, key=semver)
    if newest != version:
        raise CheckFailed(f"version {version} is not the newest changelog entry ({newest})")
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise CheckFailed(f"missing in configs/metadata.json: {', '.join(missing)}")
    for key in ("required_packages_version", "optional_packages_version"):
        if key in metadata and not isinstance(metadata[key], dict):
            raise CheckFailed(f"`{key}` is not an object of package: version")
    detail = f"{version} is the newest of {len(changelog)} changelog entries"
    since = bundle.options.since
    if since:
        changed, old = _version_at(bundle.source, since)
        if old is None:
            detail += f"; new since {since}"
        elif not changed:
            detail += f"; unchanged since {since}"
        elif semver(old) is not None and semver(version) <= semver(old):  # type: ignore[operator]
            raise CheckFailed(f"the bundle changed since {since} but its version is {version}, not newer than {old}")
        else:
            detail += f"; changed since {since}: {old} -> {version}"
    return detail


def requirements(metadata: dict) -> dict[str, str]:
    """What the model zoo's ci/get_bundle_requirements.py pins for the bundle: package -> version specifier."""
    pins = {}
    for key, package in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in metadata:
            pins[package] = f"=={metadata[key]}"
    for key in ("optional_packages_version", "required_packages_version"):
        for package, version in (metadata.get(key) or {}).items():
            version = str(version).strip()
            pins[package] = version if version[:1] in "<>=!~" else f"=={version}"
    return pins


def _release(version: str) -> str:
    return version.split("+", 1)[0]  # torch 2.13.0+cpu is torch 2.13.0


def check_requirements(bundle: Bundle) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    pins = requirements(bundle.require_metadata())
    missing, differ, wrong = [], [], []
    for package, spec in pins.items():
        try:
            # monai-unetpp: the version of the package that Python imports (a stale egg-info in a source folder
            # can shadow the installed distribution's metadata)
            have = importlib.import_module("monai_unetpp").__version__ if package == PACKAGE else None
        except ImportError:
            have = None
        try:
            have = have or installed_version(package)
        except PackageNotFoundError:
            missing.append(f"{package}{spec}")
            continue
        if spec.startswith("==") and _release(have) != spec[2:]:
            (wrong if package == PACKAGE else differ).append(f"{package} {have} (pinned {spec[2:]})")
    if missing:
        raise CheckFailed(f"not installed: {', '.join(missing)}")
    if wrong:
        raise CheckFailed(f"the bundle pins another {PACKAGE} than the installed one: {', '.join(wrong)}")
    detail = f"{len(pins)} pinned packages installed"
    if PACKAGE in pins:
        detail += f" ({PACKAGE} is not on a package index: installed from its source or a wheel built there)"
    if differ:
        detail += f"; other versions here: {', '.join(differ)}"
    return detail


def _fake_input(bundle: Bundle):
    from monai.bundle.scripts import _get_fake_spatial_shape

    image = bundle.require_metadata()["network_data_format"]["inputs"]["image"]
    return image["num_channels"], _get_fake_spatial_shape(image["spatial_shape"], p=1, n=1, any=1)


def check_net_in_out(bundle: Bundle) -> str:
    from monai.bundle import verify_net_in_out

    config = bundle.inference_config()
    device = {"device": bundle.options.device} if bundle.options.device else {}
    try:
        with quiet_monai():
            verify_net_in_out(
                net_id=NET_ID,
                meta_file=str(bundle.meta_file),
                config_file=str(config),
                bundle_root=str(bundle.copy),
                **device,
            )
        channels, shape = _fake_input(bundle)
    except Exception as e:  # noqa: BLE001 - what verify_net_in_out raises names the mismatch
        raise CheckFailed(f"{type(e).__name__}: {e}") from e
    return f"{NET_ID} of {config.relative_to(bundle.copy)} takes (1, {channels}, {', '.join(map(str, shape))})"


def check_ckpt_export(bundle: Bundle) -> str:
    import torch
    from monai.bundle import ckpt_export

    if bundle.weights_error:
        raise CheckFailed(bundle.weights_error)
    config = bundle.inference_config()
    exported = bundle.copy / "models" / "verify_model.ts"
    try:
        with quiet_monai():
            ckpt_export(
                net_id=NET_ID,
                filepath=str(exported),
                ckpt_file=str(bundle.copy / WEIGHTS),
                meta_file=str(bundle.meta_file),
                config_file=str(config),
                bundle_root=str(bundle.copy),
            )
        extra = {"metadata.json": "", f"{config.stem}.json": ""}
        module = torch.jit.load(str(exported), map_location="cpu", _extra_files=extra)
        if json.loads(extra["metadata.json"]).get("version") != bundle.metadata.get("version"):
            raise CheckFailed("the TorchScript file's metadata.json is not the bundle's")
        if not extra[f"{config.stem}.json"]:
            raise CheckFailed(f"the TorchScript file holds no {config.stem}.json")
        with quiet_monai():
            net = parsed_network(bundle)
        net.load_state_dict(torch.load(bundle.copy / WEIGHTS, map_location="cpu", weights_only=True))
        channels, shape = _fake_input(bundle)
        x = torch.rand(1, channels, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            difference = float((module(x) - net.eval()(x)).abs().max())
        if not difference <= 1e-4:
            raise CheckFailed(f"the TorchScript output differs from the checkpoint's by {difference:.3g}")
        shipped = ""
        if TORCHSCRIPT in bundle.files:
            torch.jit.load(str(bundle.copy / TORCHSCRIPT), map_location="cpu")
            shipped = f"; the shipped {TORCHSCRIPT} loads"
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - a network that does not script, or a checkpoint that does not fit
        raise CheckFailed(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    weights = "untrained weights" if bundle.untrained else WEIGHTS
    return (
        f"{weights} exported to TorchScript ({exported.stat().st_size / 2**20:.1f} MB), reloaded with "
        f"metadata.json and {config.stem}.json; its output matches the checkpoint's (max difference {difference:.1g})"
        f"{shipped}"
    )


def check_json_format(bundle: Bundle) -> str:
    names = [name for name in bundle.files if name.endswith(".json")]
    problems = [f"{name}: {p}" for name in names if (p := json_format_problem(bundle.source / name))]
    if problems:
        raise CheckFailed("; ".join(problems) + " (run pre-commit's pretty-format-json --autofix, or render)")
    return f"{len(names)} JSON files as pretty-format-json --no-sort-keys --indent=4 writes them"


def precommit_problems(path: Path, name: str) -> list[str]:
    """What the model zoo's other pre-commit hooks would change or refuse in one bundle file."""
    problems = []
    size = path.stat().st_size
    if name.startswith("models/"):
        if size > MAX_MB_MODELS * 2**20:
            problems.append(f"{size / 2**20:.0f} MB, over the model zoo's {MAX_MB_MODELS} MB (use large_files.yml)")
    elif size > MAX_KB * 1024:
        problems.append(f"{size // 1024} KB, over check-added-large-files' {MAX_KB} KB")
    if path.stat().st_mode & 0o111:
        with open(path, "rb") as f:
            if f.read(2) != b"#!":
                problems.append("executable without a shebang (check-executables-have-shebangs)")
    if path.suffix not in TEXT_SUFFIXES and path.name not in TEXT_NAMES:
        return problems
    raw = path.read_bytes()
    if b"\r" in raw:
        problems.append("CR line endings (mixed-line-ending; the bundles use LF)")
    if raw and (not raw.endswith(b"\n") or raw.endswith(b"\n\n")):
        problems.append("not exactly one newline at the end (end-of-file-fixer)")
    trailing = [i for i, line in enumerate(raw.split(b"\n"), 1) if line.rstrip(b"\r") != line.rstrip(b"\r").rstrip()]
    if trailing:
        problems.append(f"trailing whitespace on line {', '.join(map(str, trailing[:5]))} (trailing-whitespace)")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml

            list(yaml.safe_load_all(raw))
        except Exception as e:  # noqa: BLE001 - check-yaml
            problems.append(f"not YAML (check-yaml): {str(e).splitlines()[0]}")
    return problems


def check_precommit(bundle: Bundle) -> str:
    problems = [f"{name}: {p}" for name in bundle.files for p in precommit_problems(bundle.source / name, name)]
    lowered: dict[str, str] = {}
    for name in bundle.files:
        if (other := lowered.setdefault(name.lower(), name)) != name:
            problems.append(f"{name} and {other} differ only in case (check-case-conflict)")
    if problems:
        raise CheckFailed("; ".join(problems))
    return (
        f"{len(bundle.files)} files pass end-of-file-fixer, trailing-whitespace, mixed-line-ending, check-yaml, "
        f"check-case-conflict, check-executables-have-shebangs and check-added-large-files ({MAX_KB} KB)"
    )


#: every check, in the order the model zoo's verify_bundle.py runs them, then its pre-commit hooks
CHECKS: dict[str, Callable[[Bundle], str]] = {
    "files": check_files,
    "metadata_schema": check_metadata_schema,
    "version": check_version,
    "requirements": check_requirements,
    "net_in_out": check_net_in_out,
    "ckpt_export": check_ckpt_export,
    "json_format": check_json_format,
    "precommit": check_precommit,
}


@dataclass
class Result:
    bundle: str
    check: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.bundle} {self.check}: {self.detail}"


def run_checks(
    source: Path, options: Options | None = None, checks: list[str] | None = None, report=print
) -> list[Result]:
    """Run ``checks`` (all by default) on the bundle folder ``source``; ``report`` gets each result as it comes."""
    options = options or Options()
    results = []
    with tempfile.TemporaryDirectory(prefix="check_bundles_") as workdir:
        bundle = prepare(Path(source).resolve(), Path(workdir), options)
        for check in checks or list(CHECKS):
            try:
                result = Result(bundle.name, check, True, CHECKS[check](bundle))
            except CheckFailed as e:
                result = Result(bundle.name, check, False, str(e))
            except Exception as e:  # noqa: BLE001 - a check that breaks is a failure with its reason, not a crash
                result = Result(bundle.name, check, False, f"{type(e).__name__}: {e}")
            results.append(result)
            report(result)
    return results


def find_bundle(name: str) -> Path:
    path = Path(name)
    if not path.is_dir() and (BUNDLES / name).is_dir():
        path = BUNDLES / name
    if not (path / "configs").is_dir():
        raise SystemExit(f"{name}: not a bundle folder (no configs/), nor a bundle in {BUNDLES}")
    return path


def all_bundles() -> list[Path]:
    return sorted(p.parent.parent for p in BUNDLES.glob("*/configs/metadata.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="*", metavar="BUNDLE", help="bundle names in bundles/ or folders (all)")
    parser.add_argument(
        "--allow-untrained", action="store_true", help=f"a bundle without {WEIGHTS} is checked with untrained weights"
    )
    parser.add_argument("--since", metavar="REF", help="git commit: a bundle changed since then needs a new version")
    parser.add_argument("--schema", type=Path, help="the metadata schema file (default: tests/bundle_schema/<name>)")
    parser.add_argument("--device", help="device for net_in_out (default: MONAI's, cuda:0 where there is one)")
    parser.add_argument("--check", action="append", choices=list(CHECKS), help="run only these checks")
    args = parser.parse_args(argv)

    options = Options(
        require_weights=not args.allow_untrained, since=args.since, schema=args.schema, device=args.device
    )
    bundles = [find_bundle(name) for name in args.bundles] or all_bundles()
    results = []
    for bundle in bundles:
        results += run_checks(bundle, options, args.check, report=lambda r: print(r, flush=True))
    failed = [r for r in results if not r.passed]
    counts = f"{len(bundles)} bundle{'s' * (len(bundles) != 1)}, {len(results)} checks"
    print(f"{counts}: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
