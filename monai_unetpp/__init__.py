"""UNet++ for MONAI: the nested U-Net with deep supervision and real pruned inference."""

from . import data
from .inferers import UNetPlusPlusInferer
from .losses import DeepSupervisionDiceCELoss
from .networks import INFERENCE_MODES, PRESETS, UNetPlusPlus, UnetPlusPlus, UNetPP, reduce_heads, unetplusplus
from .transforms import PathSafeSpacingd, SelectHead, SelectHeadD, SelectHeadd, SelectHeadDict
from .utils import unwrap_network

__version__ = "0.2.0"

__all__ = [
    "INFERENCE_MODES",
    "PRESETS",
    "DeepSupervisionDiceCELoss",
    "PathSafeSpacingd",
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
    "reduce_heads",
    "unetplusplus",
    "unwrap_network",
]
