"""The reusable config fragments in configs/, each layered on a bundle config, instantiated and run."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc import locate

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import BUNDLE_2D, BUNDLE_3D, REPO
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer

from monai_unetpp import UNetPlusPlus

FRAGMENTS = REPO / "configs"
CONFIGS_3D = BUNDLE_3D / "configs"
CONFIGS_2D = BUNDLE_2D / "configs"


def layered(config: Path, fragment: str, **overrides) -> ConfigParser:
    """What ``--config_file "['<config>','configs/<fragment>']"`` plus command-line overrides give."""
    parser = ConfigParser()
    parser.read_config([str(config), str(FRAGMENTS / fragment)])
    parser.update(overrides)
    return parser


def fragment_targets(config) -> list[str]:
    if isinstance(config, dict):
        own = [config["_target_"]] if "_target_" in config else []
        return own + [t for v in config.values() for t in fragment_targets(v)]
    if isinstance(config, list):
        return [t for v in config for t in fragment_targets(v)]
    return []


def write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> str:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([*spacing, 1.0])), path)
    return str(path)


@pytest.mark.parametrize("fragment", sorted(p.name for p in FRAGMENTS.glob("*.yaml")))
def test_fragment_targets_are_full_dotted_paths_that_import(fragment):
    targets = fragment_targets(yaml.safe_load((FRAGMENTS / fragment).read_text()))
    for target in targets:
        assert "." in target, f"{fragment}: {target} is not a full dotted path"
        assert locate(target) is not None, f"{fragment}: {target} does not import"
    assert targets or fragment in ("fast_inference.yaml", "paper_2d.yaml", "large_3d.yaml", "large_2d.yaml")


@pytest.mark.parametrize(
    "configs, fragment, features, patch",
    [
        (CONFIGS_3D, "large_3d.yaml", (32, 32, 64, 128, 256), [96, 96, 96]),
        (CONFIGS_2D, "large_2d.yaml", (32, 64, 128, 256, 512), [128, 128]),
    ],
)
def test_large_fragments_size_the_generic_bundles_for_real_data(tmp_path, configs, fragment, features, patch):
    # the defaults are the shipped demo model's; the fragment gives training and inference the full-size network
    train = layered(configs / "train.json", fragment, bundle_root=str(tmp_path))
    inference = layered(configs / "inference.json", fragment, bundle_root=str(tmp_path))
    assert train.get_parsed_content("patch_size") == patch and train.get_parsed_content("epochs") == 500
    network = inference.get_parsed_content("network_def")
    assert network.features == features
    assert train.get_parsed_content("network_def").state_dict().keys() == network.state_dict().keys()
    with pytest.raises(RuntimeError, match="size mismatch"):  # the shipped model is not a full-size one
        network.load_state_dict(torch.load(configs.parent / "models" / "model.pt", weights_only=True))


def test_paper_2d_is_the_paper_preset_and_its_loss(tmp_path):
    parser = layered(CONFIGS_2D / "train.json", "paper_2d.yaml", bundle_root=str(tmp_path))
    net = parser.get_parsed_content("network_def")
    paper = UNetPlusPlus.from_preset("paper", spatial_dims=2, in_channels=1, out_channels=3)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in paper.state_dict().items()}
    paper.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 16, 16)
    net.eval(), paper.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), paper(x))  # same modules in the same order: the same function

    loss = parser.get_parsed_content("loss")
    assert loss.get_weights(4) == [1.0, 1.0, 1.0, 1.0]
    assert (loss.loss.lambda_dice, loss.loss.lambda_ce) == (1.0, 0.5)
    net.train()
    value = loss(net(x), torch.randint(0, 3, (2, 1, 16, 16)))
    value.backward()
    assert torch.isfinite(value) and net.heads[0].weight.grad is not None


def test_paper_2d_layers_on_inference_json_too_with_the_same_network(tmp_path):
    # its README layers it on inference.json for inference and export: a `loss::...` key there would stop MONAI
    # (inference.json has no loss); the network must be the one that train.json with the fragment trained
    inference = layered(CONFIGS_2D / "inference.json", "paper_2d.yaml", bundle_root=str(tmp_path))
    train = layered(CONFIGS_2D / "train.json", "paper_2d.yaml", bundle_root=str(tmp_path))
    net = inference.get_parsed_content("network_def")
    trained = train.get_parsed_content("network_def")
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    net.load_state_dict(trained.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), trained.eval()(x))


def test_paper_2d_loss_is_the_bundles_loss_with_the_papers_weighting():
    # the fragment gives the whole loss (see above): apart from the paper's three values it is train.json's own
    fragment = yaml.safe_load((FRAGMENTS / "paper_2d.yaml").read_text())["loss"]
    bundle = json.loads((CONFIGS_2D / "train.json").read_text())["loss"]
    paper = {"weight_mode": "same", "lambda_dice": 1.0, "lambda_ce": 0.5}
    assert {k: v for k, v in fragment.items() if k not in paper and k != "_desc_"} == {
        k: v for k, v in bundle.items() if k not in paper and k != "_desc_"
    }
    assert {k: fragment[k] for k in paper} == paper


@pytest.mark.parametrize("fragment", sorted(p.name for p in FRAGMENTS.glob("*.yaml")))
def test_fragment_examples_run_from_the_bundle_folders_that_ship_them(fragment):
    # the example command in a fragment's comment is copied into the bundles: it names the bundle's own copy
    text = (FRAGMENTS / fragment).read_text()
    assert "../" not in text and "cd bundles" not in text
    assert f"'configs/{fragment}'" in text
    shipped = [p.parent.parent.name for p in (REPO / "bundles").glob(f"*/configs/{fragment}")]
    assert shipped, f"no bundle ships {fragment}"


def test_fast_inference_runs_the_pruned_network(tmp_path):
    parser = layered(
        CONFIGS_3D / "inference.json",
        "fast_inference.yaml",
        bundle_root=str(tmp_path),
        features=[4, 8, 16, 32],
        patch_size=[16, 16, 16],
    )
    net = parser.get_parsed_content("network_def").eval()
    inferer = parser.get_parsed_content("inferer")
    assert (inferer.inference_depth, inferer.inference_mode, inferer.overlap) == (2, "final", 0.125)
    deepest_runs = []
    net.encoder[3].register_forward_hook(lambda *args: deepest_runs.append(1))
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        fast = inferer(x, net)
        assert not deepest_runs  # the fourth encoder level never ran
        reference = SlidingWindowInferer(parser.get_parsed_content("patch_size"), 4, overlap=0.125)(x, net.pruned(2))
    torch.testing.assert_close(fast, reference)


def test_ct_windows_hounsfield_units_and_resamples(tmp_path):
    hu = np.linspace(-1000, 1000, 40 * 40 * 12).reshape(40, 40, 12)
    image = write_nifti(tmp_path / "ct.nii.gz", hu, (0.75, 0.75, 3.0))
    parser = layered(CONFIGS_3D / "inference.json", "ct.yaml", bundle_root=str(tmp_path))
    out = parser.get_parsed_content("preprocessing")({"image": image})["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # clipped window
    inside = (hu > -175) & (hu < 250)
    assert 0 < inside.mean() < 1 and out.pixdim.tolist() == pytest.approx([1.5, 1.5, 2.0])
    assert out.shape[1:] == (20, 20, 18)  # 30 x 30 x 36 mm on a 1.5 x 1.5 x 2.0 mm grid


def test_mri_normalises_each_channel_over_the_foreground(tmp_path):
    rng = np.random.default_rng(0)
    channels = []
    for scale in (100.0, 3000.0):
        volume = np.zeros((24, 24, 24))
        volume[4:20, 4:20, 4:20] = rng.normal(scale, scale / 10, (16, 16, 16))
        channels.append(write_nifti(tmp_path / f"t{len(channels)}.nii.gz", volume, (1.0, 1.0, 1.0)))
    parser = layered(CONFIGS_3D / "inference.json", "mri.yaml", bundle_root=str(tmp_path), in_channels=2)
    assert parser.get_parsed_content("network_def").in_channels == 2
    out = parser.get_parsed_content("preprocessing")({"image": channels})["image"]
    assert out.shape[0] == 2 and out.pixdim.tolist() == pytest.approx([1.0, 1.0, 1.0])
    for channel in out:
        foreground = channel[4:20, 4:20, 4:20]
        assert float(foreground.mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(foreground.std()) == pytest.approx(1.0, abs=1e-2)
        assert float(channel[:4].abs().max()) == 0.0  # background stays 0
