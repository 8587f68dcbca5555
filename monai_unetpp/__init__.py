"""UNet++ for MONAI: the nested U-Net with deep supervision and real pruned inference."""

from .networks import INFERENCE_MODES, PRESETS, UNetPlusPlus, UnetPlusPlus, UNetPP, unetplusplus

__version__ = "0.1.0"

__all__ = ["INFERENCE_MODES", "PRESETS", "UNetPlusPlus", "UNetPP", "UnetPlusPlus", "unetplusplus", "__version__"]
