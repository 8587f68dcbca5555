# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Small helpers for values that come from bundle configs and the command line."""

from __future__ import annotations

__all__ = ["to_bool"]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def to_bool(value: bool | int | str, name: str = "flag") -> bool:
    """A boolean from a config value or a command-line string.

    ``python -m monai.bundle run ... --resume true`` passes the string ``"true"`` (the command line only turns
    ``True``/``False`` into booleans), and ``"false"`` would be truthy; this accepts ``true/false``, ``yes/no``,
    ``on/off`` and ``1/0`` in any case, as well as booleans and integers.

    Raises:
        ValueError: for any other value, naming ``name``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")
