from .migration import (
    basic_unetplusplus_features,
    convert_basic_unetplusplus_state_dict,
    from_basic_unetplusplus,
    heads_final_first,
    load_basic_unetplusplus,
)
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
    "basic_unetplusplus_features",
    "convert_basic_unetplusplus_state_dict",
    "from_basic_unetplusplus",
    "heads_final_first",
    "load_basic_unetplusplus",
    "reduce_heads",
    "unetplusplus",
]
