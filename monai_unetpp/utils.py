# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Generic helpers shared by the package: distributed runs, wrapped networks, atomic writes, command-line flags."""

from __future__ import annotations

import locale
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.nn as nn

__all__ = ["atomic_file", "atomic_folder", "is_main_process", "keep_locale", "to_bool", "unwrap_network"]

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


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised ``torch.distributed`` job."""
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def unwrap_network(network: Any) -> Any:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers (the object itself otherwise)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


@contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, the file written there is
    flushed to disk and renamed onto ``path``, so ``path`` is always either the previous file or the complete new
    one. On an error the temporary file is removed and ``path`` is left untouched.

    Args:
        path: the target file; its folder is created if needed.
        mode: permission bits of the new file (``mkstemp`` would leave it private). Defaults to ``0o644``.

    Examples::

        with atomic_file("models/model.pt") as tmp:
            torch.save(net.state_dict(), tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_folder(target: str | os.PathLike, write: Callable[[Path], Any], mode: int = 0o755) -> Path:
    """Fill a new folder with ``write(staging)`` in a temporary sibling, then rename it to ``target`` in one step.

    Several processes (the ranks of a multi-GPU run, say) may call this at once for the same ``target``: the first
    rename wins and the others keep its files, which they must then accept as equal to their own (the callers
    here write deterministic content). ``target`` must be missing or an empty folder.

    Returns:
        ``target`` as an absolute Path.

    Raises:
        FileExistsError: when ``target`` exists and is not an empty folder.
    """
    target = Path(target).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staging.chmod(mode)  # mkdtemp makes it private; outputs are meant to be shared like other files
        write(staging)
        try:
            os.replace(staging, target)  # atomic; on POSIX replaces only a missing or empty folder
        except OSError:
            if target.is_dir() and any(target.iterdir()):
                return target  # a concurrent writer finished first: keep its files
            if not target.is_dir():
                raise
            target.rmdir()  # platforms that do not rename onto an empty folder
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def keep_locale() -> Iterator[None]:
    """Restore the process's C locale on exit.

    GDCM's DICOM writer (SimpleITK's ``ImageFileWriter`` on ``.dcm`` files) switches the locale to ``"C"`` and leaves
    it there, which turns Python's default text encoding into ASCII for everything the process opens afterwards.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)
