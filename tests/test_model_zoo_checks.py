"""The MONAI model zoo's generic checks (scripts/check_bundles.py) pass on every bundle, and each check fails where
the model zoo's CI would (on a copy of the 2D bundle outside the repository, broken one way at a time)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE_2D, REPO

from monai_unetpp import UNetPlusPlus

SCRIPT = REPO / "scripts" / "check_bundles.py"


def load_checker():
    spec = importlib.util.spec_from_file_location("check_bundles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_bundles"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


checker = load_checker()
ALL_BUNDLES = checker.all_bundles()
CHECKS = list(checker.CHECKS)
NO_WEIGHTS = "none shipped; --allow-untrained checks it with an untrained one"


def test_every_bundle_passes_every_check_from_the_command_line():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(ALL_BUNDLES) == 3 and CHECKS == [
        "files",
        "metadata_schema",
        "version",
        "requirements",
        "net_in_out",
        "ckpt_export",
        "json_format",
        "precommit",
    ]
    results = [line for line in lines if line.startswith(("PASS ", "FAIL "))]
    assert [line.split(":")[0] for line in results] == [f"PASS {b.name} {c}" for b in ALL_BUNDLES for c in CHECKS]
    assert lines[-1] == "3 bundles, 24 checks: 24 passed, 0 failed"
    for bundle in ALL_BUNDLES:
        # every bundle ships its trained weights, under the model zoo's 25 MB, and they are what was checked
        (files,) = [line for line in results if line.startswith(f"PASS {bundle.name} files:")]
        assert "models/model.pt (" in files and checker.UNTRAINED not in files, files
        assert (bundle / "models" / "model.pt").stat().st_size < 25e6
        assert f"PASS {bundle.name} ckpt_export: models/model.pt exported" in done.stdout
        assert not list(bundle.glob("models/verify_model.ts")) and not (bundle / "eval" / "schema.json").exists()


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A copy of the files the 2D bundle ships, outside the repository (no git work tree)."""
    copy = tmp_path / BUNDLE_2D.name
    for name in checker.shipped_files(BUNDLE_2D):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUNDLE_2D / name, copy / name)
    return copy


def check(bundle: Path, *checks: str, **options) -> dict:
    results = checker.run_checks(bundle, checker.Options(**options), list(checks), report=lambda result: None)
    return {result.check: result for result in results}


def edit_metadata(bundle: Path, edit) -> None:
    path = bundle / "configs" / "metadata.json"
    metadata = json.loads(path.read_text())
    edit(metadata)
    path.write_text(checker.format_json(metadata))


def test_a_copy_outside_the_repository_ships_what_git_would_commit(bundle):
    assert checker.shipped_files(BUNDLE_2D) == checker.shipped_files(bundle)
    assert "configs/paper_2d.yaml" in checker.shipped_files(bundle)
    for output in ("data/imagesTr/a.nii.gz", "eval/x_seg.nii.gz", "runs/events", "models/last.ckpt"):
        (bundle / output).parent.mkdir(parents=True, exist_ok=True)
        (bundle / output).write_text("a run's output")
    assert checker.shipped_files(BUNDLE_2D) == checker.shipped_files(bundle)  # not part of the bundle


def test_without_weights_files_fails_unless_untrained_ones_are_allowed(bundle):
    (bundle / "models" / "model.pt").unlink()
    required = check(bundle, "files")["files"]
    assert not required.passed and required.detail == f"missing models/model.pt ({NO_WEIGHTS})"
    results = check(bundle, "files", "ckpt_export", require_weights=False)
    assert results["files"].passed and results["files"].detail.endswith(checker.UNTRAINED)
    assert results["ckpt_export"].passed and results["ckpt_export"].detail.startswith("untrained weights exported")
    assert not any((bundle / "models").iterdir())  # the bundle itself is never written to


def test_shipped_weights_are_exported_and_compared_and_weights_of_another_network_fail(bundle):
    net = checker.parsed_network(checker.prepare(bundle, bundle.parent / "work", checker.Options()))
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    torch.jit.save(torch.jit.script(net.eval()), bundle / "models" / "model.ts")
    results = check(bundle, "files", "ckpt_export")
    assert results["files"].passed and "models/model.pt (" in results["files"].detail
    detail = results["ckpt_export"].detail
    assert results["ckpt_export"].passed and detail.startswith("models/model.pt exported"), detail
    assert detail.endswith("the shipped models/model.ts loads")

    other = UNetPlusPlus(2, 1, 3, features=(4, 8), deep_supervision=True)  # not the bundle's network
    torch.save(other.state_dict(), bundle / "models" / "model.pt")
    failed = check(bundle, "ckpt_export")["ckpt_export"]
    assert not failed.passed and "RuntimeError" in failed.detail and "state_dict" in failed.detail, failed.detail


def test_files_names_what_is_missing(bundle):
    (bundle / "LICENSE").unlink()
    (bundle / "docs" / "README.md").unlink()
    (bundle / "configs" / "inference.json").unlink()
    failed = check(bundle, "files")["files"]
    assert not failed.passed
    assert failed.detail == "missing LICENSE, configs/inference.json (or .yaml, .yml), docs/README.md"


def test_metadata_schema_rejects_what_the_schema_rejects(bundle):
    assert check(bundle, "metadata_schema")["metadata_schema"].detail.endswith("SHA-256 checked)")
    edit_metadata(bundle, lambda m: m.pop("network_data_format"))
    failed = check(bundle, "metadata_schema")["metadata_schema"]
    assert not failed.passed and "'network_data_format' is a required property" in failed.detail


@pytest.mark.parametrize(
    "edit, message",
    [
        # semantic versions compare by number: 0.10.0 is newer than 0.3.1 (as strings it sorts first)
        (lambda m: m["changelog"].update({"0.10.0": "a later release"}), "is not the newest changelog entry (0.10.0)"),
        (lambda m: m.update(version="0.3"), "`version` '0.3' is not a semantic version"),
        (lambda m: m["changelog"].update({"v0.0.1": "first"}), "not semantic versions: ['v0.0.1']"),
        (lambda m: m.update(version="0.9.9"), "version 0.9.9 is missing in `changelog`"),
        (lambda m: m["changelog"].update({"0.0.1": " "}), "changelog entries without a description: ['0.0.1']"),
        (lambda m: m.pop("changelog"), "`changelog` is missing"),
        (lambda m: m.pop("pytorch_version"), "missing in configs/metadata.json: pytorch_version"),
        (lambda m: m.update(required_packages_version=["monai-unetpp"]), "`required_packages_version` is not an"),
    ],
)
def test_version_and_changelog(bundle, edit, message):
    assert check(bundle, "version")["version"].passed
    edit_metadata(bundle, edit)
    failed = check(bundle, "version")["version"]
    assert not failed.passed and message in failed.detail, failed.detail


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


def test_since_a_commit_a_changed_bundle_needs_a_newer_version(tmp_path, bundle):
    # the model zoo refuses a changed bundle whose version is already released; here: the version at a commit
    repo = tmp_path / "repo"
    shutil.copytree(bundle, repo / "bundles" / bundle.name)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "bundle")
    copy = repo / "bundles" / bundle.name
    version = json.loads((copy / "configs" / "metadata.json").read_text())["version"]
    assert check(copy, "version", since="HEAD")["version"].detail.endswith("; unchanged since HEAD")
    with open(copy / "docs" / "README.md", "a") as f:
        f.write("\nA new paragraph.\n")
    failed = check(copy, "version", since="HEAD")["version"]
    assert not failed.passed
    assert failed.detail == f"the bundle changed since HEAD but its version is {version}, not newer than {version}"
    (copy / "configs" / "new.yaml").write_text("a: 1\n")  # an untracked file is a change too
    git(repo, "checkout", "-q", "--", ".")
    assert not check(copy, "version", since="HEAD")["version"].passed
    edit_metadata(copy, lambda m: m.update(version="9.0.0", changelog={"9.0.0": "new.yaml", **m["changelog"]}))
    passed = check(copy, "version", since="HEAD")["version"]
    assert passed.passed and passed.detail.endswith(f"changed since HEAD: {version} -> 9.0.0")
    assert not check(bundle, "version", since="HEAD")["version"].passed  # no git work tree: says so
    assert "no such commit" in check(copy, "version", since="nonexistent")["version"].detail


def test_requirements_are_those_the_model_zoo_would_install(bundle):
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    pins = checker.requirements(metadata)
    assert pins["monai"] == f"=={metadata['monai_version']}" and pins["torch"] == f"=={metadata['pytorch_version']}"
    assert (
        pins["monai-unetpp"] == "==0.2.0"
        and "monai-unetpp is not on a package index" in check(bundle, "requirements")["requirements"].detail
    )

    edit_metadata(bundle, lambda m: m.update(pytorch_version="1.0.0"))
    noted = check(bundle, "requirements")["requirements"]
    assert noted.passed and f"other versions here: torch {torch.__version__} (pinned 1.0.0)" in noted.detail
    edit_metadata(bundle, lambda m: m["required_packages_version"].update({"monai-unetpp": "9.9.9"}))
    failed = check(bundle, "requirements")["requirements"]
    assert not failed.passed and "pins another monai-unetpp than the installed one" in failed.detail
    edit_metadata(bundle, lambda m: m["required_packages_version"].update({"no-such-package-zz": ">=1"}))
    failed = check(bundle, "requirements")["requirements"]
    assert not failed.passed and failed.detail == "not installed: no-such-package-zz>=1"


def test_net_in_out_compares_the_network_with_the_metadata(bundle):
    assert check(bundle, "net_in_out")["net_in_out"].detail.endswith("takes (1, 1, 16, 16)")
    edit_metadata(bundle, lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=5))
    failed = check(bundle, "net_in_out")["net_in_out"]
    assert not failed.passed and "output channel number `3` doesn't match: `5`" in failed.detail


def test_json_format(bundle):
    path = bundle / "configs" / "inference.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2) + "\n")
    failed = check(bundle, "json_format")["json_format"]
    assert not failed.passed and failed.detail.startswith("configs/inference.json: not as `pretty-format-json")


def test_precommit_hooks(bundle):
    readme = bundle / "docs" / "README.md"
    readme.write_text(readme.read_text().replace("## Data\n", "## Data  \n"))
    (bundle / "LICENSE").write_text((bundle / "LICENSE").read_text().rstrip("\n"))
    (bundle / "docs" / "huge.png").write_bytes(bytes(2 * 2**20))
    (bundle / "configs" / "broken.yaml").write_text("a: [1\n")
    (bundle / "docs" / "data_license.txt").chmod(0o755)
    (bundle / "docs" / "readme.md").write_text("another README\n")
    failed = check(bundle, "precommit")["precommit"]
    assert not failed.passed
    for problem in (
        "docs/README.md: trailing whitespace on line",
        "LICENSE: not exactly one newline at the end (end-of-file-fixer)",
        "docs/huge.png: 2048 KB, over check-added-large-files' 1024 KB",
        "configs/broken.yaml: not YAML (check-yaml)",
        "docs/data_license.txt: executable without a shebang",
        "differ only in case (check-case-conflict)",
    ):
        assert problem in failed.detail, problem


def test_the_command_line_prints_one_line_per_check_and_fails_with_the_reason(bundle, capsys):
    edit_metadata(bundle, lambda m: m["changelog"].update({"1.0.0": "newer than the version"}))
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    (bundle / "models" / "model.pt").unlink()
    assert checker.main([str(bundle), "--check", "files", "--check", "version"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"FAIL unetpp_2d_segmentation files: missing models/model.pt ({NO_WEIGHTS})",
        f"FAIL unetpp_2d_segmentation version: version {version} is not the newest changelog entry (1.0.0)",
        "1 bundle, 2 checks: 0 passed, 2 failed",
    ]
    assert checker.main(["unetpp_2d_segmentation", "--check", "json_format"]) == 0  # a bundle by its name
    assert capsys.readouterr().out.startswith("PASS unetpp_2d_segmentation json_format: ")
    with pytest.raises(SystemExit, match="not a bundle folder"):
        checker.main([str(bundle / "docs")])
