"""The planner: MONAI's DataAnalyzer fingerprint of two synthetic datasets of different geometry (1 mm isotropic
MR-like; 0.8 x 0.8 x 5 mm CT-like in HU with a small lesion), plans that differ as the rules say, and one epoch of
the 3D bundle trained with each plan as its only extra config file."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import BUNDLE_2D, BUNDLE_3D
from monai.bundle import ConfigParser, run

from monai_unetpp.data import make_demo_dataset
from monai_unetpp.plan import make_plan, predict_training_memory, rules
from monai_unetpp.plan.__main__ import main
from monai_unetpp.plan.synthetic import make_synthetic_dataset

#: tiny plans: a budget of a few MiB and narrow widths, so that one epoch takes seconds on a CPU
TINY = ["--gpu-memory", "0.02", "--base-features", "4", "--max-features", "16", "--max-levels", "4"]
GEOMETRY = {
    "ct": {"modality": "CT", "spacing": (0.8, 0.8, 5.0), "shape": (40, 40, 8)},
    "mr": {"modality": "MR", "spacing": (1.0, 1.0, 1.0), "shape": (20, 20, 20)},
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Per dataset: its folder, the plan fragment written by the command line, and DataAnalyzer's data_stats."""
    result = {}
    for name, geometry in GEOMETRY.items():
        root = tmp_path_factory.mktemp(name)
        data = make_synthetic_dataset(root / "data", num_cases=3, seed=1, **geometry)
        description = json.loads((data / "dataset.json").read_text())
        description.pop("modality")  # the modality is recognised from the intensities
        description.pop("channel_names")
        (data / "dataset.json").write_text(json.dumps(description))
        out = root / "plan.yaml"
        assert main([str(data), "--out", str(out), "--work-dir", str(root / "work"), *TINY]) == 0
        stats = yaml.safe_load((root / "work" / "data_stats.yaml").read_text())
        result[name] = {"data": data, "plan": out, "stats": stats, "root": root}
    return result


def _fragment(entry) -> dict:
    return yaml.safe_load(entry["plan"].read_text())


def test_the_command_line_writes_the_fragment_its_choices_and_the_fingerprint(planned, capsys):
    root = planned["ct"]["root"]
    summary = yaml.safe_load((root / "plan_summary.yaml").read_text())
    fingerprint = yaml.safe_load((root / "plan_fingerprint.yaml").read_text())
    assert summary["patch_size"] == _fragment(planned["ct"])["patch_size"]
    assert set(summary["reasons"]) >= {"spacing", "patch_size", "batch_size", "strides", "intensity"}
    assert fingerprint["image_stats"]["spacing"]["median"] == pytest.approx([0.8, 0.8, 5.0])


def test_plans_differ_as_the_rules_say(planned):
    ct, mr = _fragment(planned["ct"]), _fragment(planned["mr"])
    # the 5 mm axis is kept at full resolution and gets 1-voxel kernels until the in-plane spacing has caught up
    assert ct["spacing"] == pytest.approx([0.8, 0.8, 5.0])
    assert ct["strides"][0] == [2, 2, 1] and ct["kernel_size"][0] == [3, 3, 1]
    assert all(s[2] == 1 for s in ct["strides"][:2])
    assert mr["spacing"] == pytest.approx([1.0, 1.0, 1.0])
    assert all(s == [2, 2, 2] for s in mr["strides"]) and all(k == [3, 3, 3] for k in mr["kernel_size"])
    # CT: clipping and z-scoring with the foreground's statistics; MR: z-score per image
    assert ct["intensity_transform"]["_target_"] == "monai.transforms.ScaleIntensityRanged"
    assert mr["intensity_transform"]["_target_"] == "monai.transforms.NormalizeIntensityd"
    for fragment in (ct, mr):
        assert fragment["num_classes"] == 3 and fragment["in_channels"] == 1
        assert fragment["batch_size"] * fragment["num_samples"] >= 2
        assert sum(fragment["class_ratios"]) == pytest.approx(1.0, abs=1e-5)
        assert fragment["patch_size"][0] % np.prod([s[0] for s in fragment["strides"]]) == 0


def test_the_ct_normalisation_gives_the_foreground_zero_mean_and_unit_deviation(planned):
    data = planned["ct"]["data"]
    parser = ConfigParser({"t": _fragment(planned["ct"])["intensity_transform"]})
    transform = parser.get_parsed_content("t")
    values = []
    for case in sorted((data / "imagesTr").iterdir()):
        image = nib.load(case).get_fdata().astype(np.float32)
        label = np.asarray(nib.load(data / "labelsTr" / case.name).dataobj)
        values.append(np.asarray(transform({"image": image[None]})["image"])[0][label > 0])
    foreground = np.concatenate(values)
    assert abs(float(foreground.mean())) < 0.15 and float(foreground.std()) == pytest.approx(1.0, abs=0.15)
    # clipped at the foreground's 0.5 and 99.5 percentiles: 1 % of the foreground at the bounds at most, about
    lo, hi = foreground.min(), foreground.max()
    assert np.mean((foreground == lo) | (foreground == hi)) < 0.03


def test_the_patch_and_batch_fill_the_budget_and_no_more(planned):
    stats = planned["ct"]["stats"]
    small = make_plan(stats, gpu_memory_gib=0.005, base_features=4, max_features=16, max_levels=4)
    large = make_plan(stats, gpu_memory_gib=0.5, base_features=4, max_features=16, max_levels=4)
    # a small budget shrinks the patch below the median image; a large one takes the whole image
    assert np.prod(small.patch_size) < np.prod(small.median_shape) <= np.prod(large.patch_size)
    assert all(p >= s for p, s in zip(large.patch_size, large.median_shape, strict=True))
    for plan, budget in ((small, 0.005), (large, 0.5)):
        assert plan.predicted_memory_gib <= 0.85 * budget
        est = predict_training_memory(
            plan.patch_size, plan.batch_size, plan.features, plan.strides, plan.kernel_sizes, 1, 3, precision="amp"
        )
        assert est.gib() == pytest.approx(plan.predicted_memory_gib, rel=1e-3)
    # the modality can be given: MR normalisation for the CT-like set
    assert make_plan(stats, modality="MR", gpu_memory_gib=0.02, base_features=4).intensity["scheme"] == "zscore"
    for bad, message in (
        ({"max_features": 0}, "max_features must be a whole number >= 1, got 0"),
        ({"base_features": 7.5}, "base_features must be a whole number >= 1, got 7.5"),
        ({"gpu_memory_gib": "24"}, "gpu_memory_gib must be a positive number of GiB, got '24'"),
    ):
        with pytest.raises(ValueError, match=message):
            make_plan(stats, **bad)
    with pytest.raises(ValueError, match="gpu_memory_gib=1e-05 cannot hold"):
        make_plan(stats, gpu_memory_gib=1e-5)
    with pytest.raises(ValueError, match="describe 3D images .* but spatial_dims=2"):
        make_plan(stats, spatial_dims=2)


@pytest.mark.parametrize(
    "stats, message",
    [({"image_stats": {}}, "stats_summary"), ({"stats_summary": {"image_stats": {}}}, "label_stats/labels")],
)
def test_other_dicts_than_data_analyzer_output_are_refused(stats, message):
    with pytest.raises(ValueError, match=message):
        make_plan(stats)


def test_the_rules_on_the_numbers_nnunet_documents():
    # anisotropic: the 5 mm axis goes to the 10th percentile of its spacings, never finer than the other axes
    assert rules.target_spacing([0.8, 0.8, 5.0], [0.7, 0.7, 3.0], [512, 512, 40]) == [0.8, 0.8, 3.0]
    assert rules.target_spacing([0.8, 0.8, 5.0], [0.7, 0.7, 0.5], [512, 512, 40]) == [0.8, 0.8, 0.8]
    # thick slices but many of them: no separate axis
    assert rules.target_spacing([0.8, 0.8, 5.0], [0.7, 0.7, 3.0], [512, 512, 300]) == [0.8, 0.8, 5.0]
    strides, kernels = rules.topology([1.0, 1.0, 1.0], [128, 128, 128], max_levels=6)
    assert strides == [[2, 2, 2]] * 5 and kernels == [[3, 3, 3]] * 6
    strides, _ = rules.topology([1.0, 1.0, 1.0], [128, 128, 12], max_levels=6)
    assert [s[2] for s in strides] == [2, 1, 1, 1, 1]  # 12 -> 6: below 8 a side is pooled no more
    assert rules.class_ratios([0.5, 0.5])[1] == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ["ct", "mr"])
def test_one_epoch_trains_with_the_plan_as_the_only_extra_config(planned, name, tmp_path):
    entry = planned[name]
    fragment = _fragment(entry)
    configs = [str(BUNDLE_3D / "configs" / "train.json"), str(entry["plan"])]
    parser = ConfigParser()
    parser.read_config(configs)
    network = parser.get_parsed_content("network_def")
    assert [list(s) for s in network.strides] == fragment["strides"]
    run(
        config_file=configs,
        meta_file=str(BUNDLE_3D / "configs" / "metadata.json"),
        bundle_root=str(tmp_path),
        dataset_dir=str(entry["data"]),
        epochs=1,
        num_workers=0,
        progress_bar=False,
    )
    assert (tmp_path / "models" / "model.pt").is_file()
    if name == "ct":  # inference with the same fragment, on one training image, writes a map of its shape
        image = sorted((entry["data"] / "imagesTr").iterdir())[0]
        run(
            config_file=[str(BUNDLE_3D / "configs" / "inference.json"), str(entry["plan"])],
            meta_file=str(BUNDLE_3D / "configs" / "metadata.json"),
            bundle_root=str(tmp_path),
            dataset_dir=str(entry["data"]),
            **{"dataset#data": [{"image": str(image)}]},
            num_workers=0,
            progress_bar=False,
            save_montages=False,
        )
        seg = nib.load(tmp_path / "eval" / image.name.replace(".nii.gz", "_seg.nii.gz"))
        assert seg.shape == nib.load(image).shape


def test_a_2d_dataset_is_planned_for_the_2d_bundle_and_trains(tmp_path):
    # 2D NIfTI images: DataAnalyzer gives their spacing three entries (of the affine), their shape two
    data = make_demo_dataset(tmp_path / "data", spatial_dims=2, num_cases=4, num_test=1, shape=(48, 48))
    plan = tmp_path / "plan.yaml"
    assert main([str(data), "--out", str(plan), "--spatial-dims", "2", *TINY]) == 0
    fragment = yaml.safe_load(plan.read_text())
    assert fragment["spacing"] == pytest.approx([0.8, 0.8]) and len(fragment["patch_size"]) == 2
    assert all(len(s) == 2 for s in fragment["strides"]) and all(len(k) == 2 for k in fragment["kernel_size"])
    run(
        config_file=[str(BUNDLE_2D / "configs" / "train.json"), str(plan)],
        meta_file=str(BUNDLE_2D / "configs" / "metadata.json"),
        bundle_root=str(tmp_path),
        dataset_dir=str(data),
        epochs=1,
        num_workers=0,
        progress_bar=False,
    )
    assert (tmp_path / "models" / "model.pt").is_file()


def test_the_command_line_names_a_missing_dataset(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "plan.yaml")]) == 2
    assert f"dataset {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "plan.yaml").exists()
