# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Scripts of the ``unetpp`` Auto3DSeg algorithm: ``algo.py`` (the algorithm), ``train.py`` and ``infer.py``."""
