"""The bundles' configs are rendered from one source (bundles/_source by scripts/render_bundles.py), committed in the
model zoo's JSON format, and every bundle folder runs on its own, wherever it is copied."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import BUNDLES, REPO

from monai_unetpp.data import make_demo_dataset

ALL_BUNDLES = sorted(path.parent.parent for path in BUNDLES.glob("*/configs/metadata.json"))
#: outputs of local runs (ignored by git): not part of a bundle
OUTPUTS = {"data", "models", "eval", "outputs", "runs"}


def load_renderer():
    spec = importlib.util.spec_from_file_location("render_bundles", REPO / "scripts" / "render_bundles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundle_files(bundle: Path, suffix: str) -> list[Path]:
    return sorted(
        p for p in bundle.rglob(f"*{suffix}") if p.is_file() and not OUTPUTS & set(p.relative_to(bundle).parts[:1])
    )


def test_rendered_configs_equal_the_committed_ones():
    renderer = load_renderer()
    files = renderer.render(renderer.SOURCE, renderer.BUNDLES)
    assert {path.parent.parent for path in files} == set(ALL_BUNDLES), "a bundle without a source, or the reverse"
    changed = renderer.differences(files, renderer.BUNDLES)
    assert not changed, (
        "these files differ from their rendering; edit bundles/_source, run `python scripts/render_bundles.py` and "
        f"commit the result: {[str(p.relative_to(REPO)) for p in changed]}"
    )


def test_check_lists_the_files_that_differ_and_render_rewrites_them(tmp_path, monkeypatch, capsys):
    renderer = load_renderer()
    for bundle in ALL_BUNDLES:
        shutil.copytree(bundle / "configs", tmp_path / bundle.name / "configs")
    monkeypatch.setattr(renderer, "BUNDLES", tmp_path)
    assert renderer.main(["--check"]) == 0

    edited = tmp_path / "unetpp_2d_segmentation" / "configs" / "train.json"
    edited.write_text(edited.read_text().replace('"epochs": 500', '"epochs": 5'))
    (tmp_path / "unetpp_3d_segmentation" / "configs" / "inference.json").unlink()
    (tmp_path / "unetpp_3d_segmentation" / "configs" / "extra.json").write_text("{}\n")
    capsys.readouterr()
    assert renderer.main(["--check", "--diff"]) == 1
    out = capsys.readouterr().out
    assert f"{edited}: differs from its rendering" in out and '+    "epochs": 500,' in out
    assert "unetpp_3d_segmentation/configs/inference.json: differs" in out
    assert "unetpp_3d_segmentation/configs/extra.json: stale" in out
    assert "train.json" not in out.replace(str(edited), "")  # the other bundles' files are not listed

    assert renderer.main([]) == 0  # writes the two files, leaves the stale one alone
    assert '"epochs": 500' in edited.read_text()
    (tmp_path / "unetpp_3d_segmentation" / "configs" / "extra.json").unlink()
    assert renderer.main(["--check"]) == 0


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_every_json_file_is_in_the_model_zoo_format(bundle):
    # what the model zoo's pre-commit hook `pretty-format-json --autofix --no-sort-keys --indent=4` (pre-commit-hooks)
    # does: load keeping the key order, dump with indent=4 and its default ensure_ascii=True, add one newline
    files = bundle_files(bundle, ".json")
    assert bundle / "configs" / "metadata.json" in files
    for path in files:
        with open(path, encoding="UTF-8") as f:
            contents = f.read()
        pretty = json.dumps(json.loads(contents, object_pairs_hook=dict), indent=4, ensure_ascii=True) + "\n"
        assert contents == pretty, f"{path.relative_to(REPO)} is not as pretty-format-json --indent=4 writes it"
        assert b"\r" not in path.read_bytes(), f"{path.relative_to(REPO)} has CR line endings"


def strings(config) -> list[str]:
    """Every id and value string of a config that is read at run time (descriptions are not)."""
    if isinstance(config, dict):
        return [s for k, v in config.items() if k != "_desc_" for s in (k, *strings(v))]
    if isinstance(config, list):
        return [s for v in config for s in strings(v)]
    return [config] if isinstance(config, str) else []


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_configs_refer_to_nothing_outside_the_bundle(bundle):
    for path in bundle_files(bundle, ".json"):
        if path.parent.name != "configs" or path.name == "metadata.json":
            continue
        for text in strings(json.loads(path.read_text())):
            for outside in ("../", "..\\", "bundles/", "_source/", "configs/"):  # paths beyond bundle_root
                assert outside not in text, f"{path.name}: {text}"
            # macros (%id) and references (@id) within the config; a `%file.json::id` macro would read another file
            assert not (text.startswith("%") and ("." in text or "/" in text)), f"{path.name}: {text}"


def test_a_zipped_bundle_trains_and_infers_elsewhere_from_the_command_line(tmp_path):
    # zip the 2D bundle (the fastest), unzip it into a folder of its own, and run it as a user would, with the
    # flags as strings: --progress_bar false and --save_montages false must turn the bar and the montages off
    archive = tmp_path / "bundle.zip"
    source = BUNDLES / "unetpp_2d_segmentation"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(source.rglob("*")):
            if path.is_file() and not OUTPUTS & set(path.relative_to(source).parts[:1]):
                z.write(path, path.relative_to(source.parent))
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "elsewhere")
    bundle = tmp_path / "elsewhere" / "unetpp_2d_segmentation"
    make_demo_dataset(bundle / "data", spatial_dims=2, num_cases=3, num_test=1, shape=(32, 32))
    tiny = ["--features", "[4, 8, 16]", "--patch_size", "[16, 16]", "--num_workers", "0", "--progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def run(config: str, *args: str) -> str:
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
        command += ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf", *tiny, *args]
        result = subprocess.run(command, cwd=bundle, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    out = run("configs/train.json", "--epochs", "1", "--val_interval", "1", "--batch_size", "1", "--num_samples", "1")
    assert (bundle / "models" / "model.pt").is_file()
    assert "Epoch[1] Complete" in out and "loss=" not in out  # no progress bar ("Iteration: [1/2] ..., loss=2.91")
    run("configs/inference.json", "--save_montages", "false")
    written = sorted(p.name for p in (bundle / "eval").iterdir())
    assert len([n for n in written if n.endswith("_seg.nii.gz")]) == 1, written
    assert not [n for n in written if n.endswith(".png")], written  # no montage
