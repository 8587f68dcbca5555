"""What several test modules share: the checkout's paths, seeded inputs and tiny networks.

Test modules import these names with ``from conftest import ...`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_unetpp import UNetPlusPlus

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
BUNDLE_3D = BUNDLES / "unetpp_3d_segmentation"
BUNDLE_2D = BUNDLES / "unetpp_2d_segmentation"
BUNDLE_BRAIN = BUNDLES / "unetpp_brain_tissue_mri_segmentation"

#: Bundle settings for a CPU test: a 2-level network on 16^3 patches, one patch per step, no worker processes.
TINY_BUNDLE = {
    "features": [4, 8, 16],
    "patch_size": [16, 16, 16],
    "batch_size": 1,
    "num_samples": 1,
    "num_workers": 0,
    "progress_bar": False,
}

#: Widths of the tiny test networks by level: depth k uses the first k + 1.
TINY = (4, 8, 8, 16, 16, 16)


def tiny_net(spatial_dims: int = 3, depth: int = 3, out_channels: int = 3, **kwargs) -> UNetPlusPlus:
    """A UNet++ with widths :data:`TINY` and (unless told otherwise) deep supervision."""
    kwargs.setdefault("deep_supervision", True)
    return UNetPlusPlus(spatial_dims, 1, out_channels, features=TINY[: depth + 1], **kwargs)


def seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    """A standard-normal tensor that depends on the seed only, not on the random state earlier tests left."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def one_thread():
    """One torch thread for the test: on tiny tensors a second thread only adds OpenMP synchronisation, which a
    busy machine makes slow (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
