from .unetplusplus import (
    DEFAULT_FEATURES,
    INFERENCE_MODES,
    PRESETS,
    UNetPlusPlus,
    UnetPlusPlus,
    UNetPP,
    reduce_heads,
    unetplusplus,
)

__all__ = [
    "DEFAULT_FEATURES",
    "INFERENCE_MODES",
    "PRESETS",
    "UNetPlusPlus",
    "UNetPP",
    "UnetPlusPlus",
    "reduce_heads",
    "unetplusplus",
]
