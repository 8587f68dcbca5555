"""UNet++ for MONAI: the nested U-Net with deep supervision and real pruned inference."""

from . import data
from .inferers import UNetPlusPlusInferer, unwrap_network
from .losses import DeepSupervisionDiceCELoss
from .networks import INFERENCE_MODES, PRESETS, UNetPlusPlus, UnetPlusPlus, UNetPP, unetplusplus
from .transforms import SelectHead, SelectHeadD, SelectHeadd, SelectHeadDict

__version__ = "0.1.0"

__all__ = [
    "INFERENCE_MODES",
    "PRESETS",
    "DeepSupervisionDiceCELoss",
    "SelectHead",
    "SelectHeadD",
    "SelectHeadDict",
    "SelectHeadd",
    "UNetPP",
    "UNetPlusPlus",
    "UNetPlusPlusInferer",
    "UnetPlusPlus",
    "__version__",
    "data",
    "unetplusplus",
    "unwrap_network",
]
