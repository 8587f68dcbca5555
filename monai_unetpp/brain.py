# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Deprecated alias of :py:mod:`monai_unetpp.data.brain`, kept for one release."""

import warnings

from .data.brain import *  # noqa: F403
from .data.brain import __all__  # noqa: F401

warnings.warn(
    "monai_unetpp.brain moved to monai_unetpp.data.brain; import it from there (the old name goes in the next "
    "release).",
    DeprecationWarning,
    stacklevel=2,
)
