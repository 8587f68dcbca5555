# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The share of the validation images of each process of a multi-GPU run (``torchrun``)."""

from __future__ import annotations

from collections.abc import Sized

import torch.distributed as dist
from monai.data import DistributedSampler

__all__ = ["validation_sampler"]


def validation_sampler(dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> DistributedSampler:
    """A ``monai.data.DistributedSampler`` over the validation images by which the processes' mean metric is the
    mean over the images, each counted once.

    With at least as many images as processes, each process gets its own images (``even_divisible=False``). With
    fewer, MONAI's sampler cannot leave a process without images: when the number of processes is a multiple of the
    number of images, each image goes to as many processes, which keeps the mean exact; otherwise some images
    would count twice, and this is an error that says what to change.

    Args:
        dataset: the validation dataset.
        num_replicas: the number of processes. Defaults to the process group's size.
        rank: this process's rank. Defaults to the process group's.

    Raises:
        ValueError: for fewer images than processes, where the processes are no multiple of the images.
    """
    world = dist.get_world_size() if num_replicas is None else num_replicas
    count = len(dataset)
    if count == 0 or (count < world and world % count):
        raise ValueError(
            f"the validation set holds {count} image(s), fewer than the {world} processes of this run, which would "
            f"count some of them twice in the mean metric; validate on at least {world} images (the brain bundle: "
            f"--num_validation {world}), or on a number that divides {world}, or run fewer processes."
        )
    return DistributedSampler(dataset, even_divisible=count < world, num_replicas=world, rank=rank, shuffle=False)
