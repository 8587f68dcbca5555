# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""From MONAI's ``BasicUNetPlusPlus`` to :py:class:`monai_unetpp.UNetPlusPlus`: the same network and weights.

MONAI's ``BasicUNetPlusPlus`` (``monai/networks/nets/basic_unetplusplus.py``) and ours are the same architecture
when MONAI's widths double: ``features=(f0, f0, 2 f1, 4 f1, 8 f1, f0)`` (its default ``(32, 32, 64, 128, 256,
32)``). MONAI upsamples level ``i + 1`` to half its width and level 1 to its full width, and gives the top node
X^{0,4} the sixth width; ours upsamples every level to the width of the level it joins and uses ``f0`` for the top
row. Other widths change the parameter counts, so they have no equivalent. The module names differ
(``conv_0_0``/``upcat_1_2``/``final_conv_0_4`` there, ``encoder.0``/``decoder.1.1``/``heads.3`` here): the
functions below rename them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNetPlusPlus

from ..utils import to_bool, unwrap_network
from .unetplusplus import UNetPlusPlus

__all__ = [
    "basic_unetplusplus_features",
    "convert_basic_unetplusplus_state_dict",
    "from_basic_unetplusplus",
    "heads_final_first",
    "load_basic_unetplusplus",
]

_DEPTH = 4  # BasicUNetPlusPlus has five levels
_ENCODER = re.compile(r"^conv_(\d)_0\.(?:convs\.)?(.+)$")
_DECODER = re.compile(r"^upcat_(\d)_(\d)\.(upsample|convs)\.(.+)$")
_HEAD = re.compile(r"^final_conv_0_(\d)\.(weight|bias)$")


def heads_final_first(network: Any, heads: Any) -> list[torch.Tensor]:
    """``network``'s list of head outputs, final first: MONAI's deep-supervision contract (``SegResNetDS``) and
    ours. MONAI's ``BasicUNetPlusPlus`` lists its heads final last, in eval too, so its list is reversed."""
    heads = list(heads)
    return heads[::-1] if isinstance(unwrap_network(network), BasicUNetPlusPlus) else heads


def basic_unetplusplus_features(features: Any) -> tuple[int, ...]:
    """Our ``features`` for MONAI ``BasicUNetPlusPlus`` widths (six values, or one repeated six times, as MONAI).

    Raises:
        ValueError: where MONAI's widths do not double, so that no network of ours holds the same parameters.
    """
    fea = tuple(int(f) for f in features) if isinstance(features, (list, tuple)) else (int(features),) * 6
    if len(fea) != 6:
        raise ValueError(f"BasicUNetPlusPlus takes six widths (five levels and the top node's), got {fea}.")
    equivalent = (fea[0], fea[0], 2 * fea[1], 4 * fea[1], 8 * fea[1], fea[0])
    if fea != equivalent:
        raise ValueError(
            f"BasicUNetPlusPlus features={fea} have no UNetPlusPlus equivalent: MONAI upsamples level i + 1 to half "
            "its width (level 1 to its full width) and gives X^(0,4) the sixth width, UNetPlusPlus upsamples to the "
            f"width of the level it joins, so the parameter counts differ. Equivalent widths double: {equivalent} "
            "(MONAI's default is (32, 32, 64, 128, 256, 32)). For other widths, train UNetPlusPlus with "
            f"features={fea[:5]} from scratch."
        )
    return fea[:5]


def _our_key(key: str, deep_supervision: bool) -> str | None:
    """Our name for a ``BasicUNetPlusPlus`` parameter, or None for a head that a network without deep
    supervision does not have."""
    if match := _ENCODER.match(key):
        return f"encoder.{match[1]}.block.{match[2]}"
    if match := _DECODER.match(key):
        level, column, part, rest = int(match[1]), int(match[2]), match[3], match[4]
        return f"decoder.{column - 1}.{level}.{'up' if part == 'upsample' else 'block'}.{rest}"
    if match := _HEAD.match(key):
        column = int(match[1])
        if deep_supervision:
            return f"heads.{column - 1}.{match[2]}"
        return f"heads.0.{match[2]}" if column == _DEPTH else None
    raise ValueError(f"{key!r} is not a parameter of MONAI's BasicUNetPlusPlus; is this its state_dict?")


def _state_dict_of(checkpoint: Mapping[str, Any] | str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The ``BasicUNetPlusPlus`` weights in a state_dict, a checkpoint dict that holds one (``{"model": ...}``,
    ``{"state_dict": ...}``, ...), or a file of either."""
    source = checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{source}: cannot read a checkpoint ({type(error).__name__}: {error}).") from error
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state_dict or a checkpoint dict, got {type(checkpoint).__name__} from {source}.")
    if "conv_0_0.conv_0.conv.weight" in checkpoint:
        return checkpoint
    for value in checkpoint.values():
        if isinstance(value, Mapping) and "conv_0_0.conv_0.conv.weight" in value:
            return value
    raise ValueError(
        f"{source if not isinstance(source, Mapping) else 'the checkpoint'} holds no BasicUNetPlusPlus state_dict "
        f"(no 'conv_0_0.conv_0.conv.weight'; top-level keys: {sorted(checkpoint)[:8]})."
    )


def convert_basic_unetplusplus_state_dict(
    checkpoint: Mapping[str, Any] | str | os.PathLike, deep_supervision: bool = True
) -> dict[str, torch.Tensor]:
    """A ``BasicUNetPlusPlus`` state_dict renamed for :py:class:`UNetPlusPlus` (same tensors).

    Args:
        checkpoint: MONAI's state_dict, a checkpoint dict holding it (a bundle's ``{"model": ...}``), or a file.
        deep_supervision: whether the target network has deep supervision. MONAI's network always holds the four
            heads; without deep supervision only the final one (``final_conv_0_4``) is kept.
    """
    state = _state_dict_of(checkpoint)
    deep_supervision = to_bool(deep_supervision, "deep_supervision")
    converted = {}
    for key, value in state.items():
        ours = _our_key(key, deep_supervision)
        if ours is not None:
            converted[ours] = value
    return converted


def load_basic_unetplusplus(
    checkpoint: Mapping[str, Any] | str | os.PathLike, deep_supervision: bool = True, **network_args: Any
) -> UNetPlusPlus:
    """A :py:class:`UNetPlusPlus` holding the weights of a ``BasicUNetPlusPlus`` state_dict or checkpoint file.

    Dimensions, channels and widths are read from the weights; pass the other arguments MONAI's network was built
    with (``act``, ``norm``, ``dropout``, ``upsample``, ...) in ``network_args`` where they differ from the
    defaults, which are MONAI's. ``upsample="nontrainable"`` gets MONAI's ``align_corners=True``.

    Examples::

        >>> net = load_basic_unetplusplus("models/model.pt", deep_supervision=True)
        >>> net = load_basic_unetplusplus(torch.load("ckpt.pt")["model"], norm="batch", upsample="nontrainable")
    """
    read = sorted({"spatial_dims", "in_channels", "out_channels", "features"} & set(network_args))
    if read:
        raise ValueError(
            f"{', '.join(read)} are read from the weights of MONAI's network and cannot be given; drop "
            f"{'it' if len(read) == 1 else 'them'}."
        )
    deep_supervision = to_bool(deep_supervision, "deep_supervision")
    state = _state_dict_of(checkpoint)
    first = state["conv_0_0.conv_0.conv.weight"]
    top = state["upcat_0_4.convs.conv_0.conv.weight"]
    widths = [int(state[f"conv_{i}_0.{'' if i == 0 else 'convs.'}conv_0.conv.weight"].shape[0]) for i in range(5)]
    features = basic_unetplusplus_features([*widths, int(top.shape[0])])
    if network_args.get("upsample", "deconv") == "deconv" and network_args.get("bias", True) is False:
        raise ValueError(
            "BasicUNetPlusPlus(bias=False) keeps a bias in its deconvolutions, UNetPlusPlus(bias=False) does not: "
            "no equivalent network."
        )
    args = {"align_corners": network_args.get("upsample") == "nontrainable", **network_args}
    net = UNetPlusPlus(
        spatial_dims=first.dim() - 2,
        in_channels=int(first.shape[1]),
        out_channels=int(state["final_conv_0_4.weight"].shape[0]),
        features=features,
        deep_supervision=deep_supervision,
        **args,
    )
    converted = convert_basic_unetplusplus_state_dict(state, deep_supervision)
    ours = net.state_dict()
    mismatched = sorted(k for k in ours if k not in converted or converted[k].shape != ours[k].shape)
    if mismatched or len(converted) != len(ours):
        differ = mismatched[:6] or sorted(set(converted) - set(ours))[:6]
        built = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise ValueError(
            f"the BasicUNetPlusPlus weights do not fit UNetPlusPlus({built}): {differ} differ; pass the act, norm, "
            "bias and upsample MONAI's network was built with."
        )
    net.load_state_dict(converted)
    return net


def _act_spec(act: nn.Module) -> tuple[str, dict[str, Any]]:
    """MONAI's ``act`` spec, with every argument, that builds a module computing what ``act`` computes."""
    if isinstance(act, nn.LeakyReLU):
        return "leakyrelu", {"negative_slope": act.negative_slope, "inplace": act.inplace}
    if isinstance(act, nn.PReLU):
        return "prelu", {"num_parameters": act.num_parameters}
    if isinstance(act, nn.GELU):
        return "gelu", {"approximate": act.approximate}
    if isinstance(act, nn.ELU):
        return "elu", {"alpha": act.alpha, "inplace": act.inplace}
    if type(act) in (nn.ReLU, nn.SELU):
        return ("relu" if type(act) is nn.ReLU else "selu"), {"inplace": act.inplace}
    raise ValueError(f"cannot read the activation {act!r}; pass act= as MONAI's network was built with.")


def _norm_spec(norm: nn.Module) -> tuple[str, dict[str, Any]]:
    """MONAI's ``norm`` spec, with every argument, of ``norm``."""
    if isinstance(norm, (nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm)):
        name = "instance" if isinstance(norm, nn.modules.instancenorm._InstanceNorm) else "batch"
        return name, {
            "eps": norm.eps,
            "momentum": norm.momentum,
            "affine": norm.affine,
            "track_running_stats": norm.track_running_stats,
        }
    if isinstance(norm, nn.GroupNorm):
        return "group", {"num_groups": norm.num_groups, "eps": norm.eps, "affine": norm.affine}
    raise ValueError(f"cannot read the normalisation {norm!r}; pass norm= as MONAI's network was built with.")


def _layer_args(net: nn.Module) -> dict[str, Any]:
    """The ``act``, ``norm``, ``dropout``, ``bias`` and ``upsample`` a built ``BasicUNetPlusPlus`` was made with,
    read from its first block and its first upsampling."""
    block = net.conv_0_0.conv_0
    adn = block.adn
    args: dict[str, Any] = {"bias": block.conv.bias is not None, "act": None, "norm": None, "dropout": 0.0}
    if hasattr(adn, "A"):
        args["act"] = _act_spec(adn.A)
    if hasattr(adn, "N"):
        args["norm"] = _norm_spec(adn.N)
    if hasattr(adn, "D"):
        args["dropout"] = float(adn.D.p)
    upsample = dict(net.upcat_0_1.upsample.named_children())
    args["upsample"] = (
        "deconv" if "deconv" in upsample else "pixelshuffle" if "pixelshuffle" in upsample else "nontrainable"
    )
    return args


def from_basic_unetplusplus(net: nn.Module, **network_args: Any) -> UNetPlusPlus:
    """The :py:class:`UNetPlusPlus` that computes what a built MONAI ``BasicUNetPlusPlus`` computes, with its weights.

    The architecture is read from ``net`` (widths, channels, activation, normalisation, dropout, bias, upsampling);
    ``network_args`` override what was read. The returned network is in ``net``'s training/eval mode, on CPU.

    Differences that stay (MONAI's deep-supervision contract, as ``SegResNetDS``): in training a list of heads
    **final first** (MONAI: final last); in eval **one Tensor** (MONAI: a list). For sides not divisible by 16,
    MONAI pads the upsampled tensors while ours pools with ``ceil_mode`` and crops, so outputs agree exactly only
    where every side is a multiple of 16.

    Raises:
        ValueError: for widths that do not double (see :func:`basic_unetplusplus_features`).
    """
    if not all(hasattr(net, name) for name in ("conv_0_0", "upcat_0_4", "final_conv_0_4")):
        raise ValueError(f"expected a monai.networks.nets.BasicUNetPlusPlus, got {type(net).__name__}.")
    args = {**_layer_args(net), **network_args}
    deep_supervision = args.pop("deep_supervision", bool(net.deep_supervision))
    ours = load_basic_unetplusplus(net.state_dict(), deep_supervision=deep_supervision, **args)
    return ours.train(net.training)
