from .unetplusplus import INFERENCE_MODES, PRESETS, UNetPlusPlus, UnetPlusPlus, UNetPP, unetplusplus

__all__ = ["INFERENCE_MODES", "PRESETS", "UNetPlusPlus", "UNetPP", "UnetPlusPlus", "unetplusplus"]
