# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""What a MONAI Label server hands the UNet++ tasks, checked: the image a request names, the pairs training uses.

MONAI Label (0.8.5) passes a request's image on as it is, stores a submitted label without looking at it, and trains
on whatever the datastore holds. This module, which does not need MONAI Label, checks what arrives:

- :class:`LoadDatastoreImaged` loads a request's image with :class:`monai_unetpp.data.SimpleITKReader` (a truncated
  or damaged file is an error, not a silent label), refuses a file outside the server's datastore (MONAI Label
  itself segments any server path given as an image id), and raises :class:`ImageRequestError`, which the server
  answers with a 4xx status and the message (naming the image and the fix) instead of a bare
  "Internal Server Error".
- :func:`check_training_pairs` checks each (image, label) pair before training (files readable and complete,
  label on the image's grid, label values) and leaves out a bad pair with a warning naming its image id, so that
  one bad submission neither corrupts nor blocks training; with no usable pair left it raises
  :class:`TrainingDataError`. :class:`CheckedCacheDataset` runs it where a bundle's ``train.json`` builds its
  datasets (MONAI Label's bundle train task replaces the bundle's datalist with its own).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Collection, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import CacheDataset
from monai.transforms import LoadImaged

from ..data import SimpleITKReader
from ..data.checks import as_paths, image_info, read_label_array
from ..data.readers import CorruptImageError, check_image_data

try:  # MONAI Label's server (FastAPI) answers a starlette HTTPException with its status code and detail
    from starlette.exceptions import HTTPException as _HTTPException
except ImportError:  # pragma: no cover - MONAI Label (and with it starlette) is an optional extra
    _HTTPException = None

__all__ = [
    "CheckedCacheDataset",
    "CorruptImageRequestError",
    "ImageOutsideDatastoreError",
    "ImageRequestError",
    "LoadDatastoreImaged",
    "RequestError",
    "TrainingDataError",
    "check_datastore_path",
    "check_pair",
    "check_training_pairs",
    "datastore_folders",
    "image_id",
]

logger = logging.getLogger(__name__)

_BASES: tuple[type, ...] = (ValueError,) if _HTTPException is None else (_HTTPException, ValueError)
_IMAGE_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".tif")
# tempfile.NamedTemporaryFile names: where MONAI Label's /infer keeps an uploaded image (``file=``) for the request
_UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[A-Za-z0-9]+)*")
_SHOWN_VALUES = 10


class RequestError(*_BASES):  # type: ignore[misc]
    """A MONAI Label request that the UNet++ tasks refuse, with the reason and the fix.

    Where starlette is installed (MONAI Label's server) it is a ``starlette.exceptions.HTTPException`` as well, which
    the server answers with ``status_code`` and a JSON body ``{"detail": message}`` instead of a bare "Internal
    Server Error"; it is always a ``ValueError``.
    """

    def __init__(self, message: str, status_code: int = 422) -> None:
        if _HTTPException is not None:
            _HTTPException.__init__(self, status_code=status_code, detail=message)
        self.status_code = status_code
        self.detail = message
        self.args = (message,)

    def __str__(self) -> str:
        return self.detail

    def __reduce__(self) -> tuple:  # picklable (DataLoader workers re-raise their errors in the main process)
        return type(self), (self.detail, self.status_code)


class ImageRequestError(RequestError):
    """An image a MONAI Label request names that the UNet++ tasks refuse (HTTP 422 unless a subclass says)."""


class ImageOutsideDatastoreError(ImageRequestError):
    """A request for an image file outside the server's datastore (HTTP 403)."""

    def __init__(self, message: str, status_code: int = 403) -> None:
        super().__init__(message, status_code)


class CorruptImageRequestError(ImageRequestError, CorruptImageError):
    """A request's image that is truncated, damaged or unreadable (HTTP 422); also a ``CorruptImageError``."""

    def __init__(self, message: str, status_code: int = 422, path: str | os.PathLike | None = None) -> None:
        CorruptImageError.__init__(self, message, path)
        RequestError.__init__(self, message, status_code)

    def __reduce__(self) -> tuple:
        return type(self), (self.detail, self.status_code, self.path)


class TrainingDataError(ValueError):
    """No (image, label) pair of a training run is usable; the message lists every pair's problem."""


def image_id(path: str | os.PathLike) -> str:
    """The MONAI Label image id of a datastore file: its name without the image suffix (``img3.nii.gz`` -> ``img3``)."""
    name = Path(path).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------------------------------------------------
# the datastore's folders


def _setting(name: str) -> str:
    """A MONAI Label setting: the server's ``monailabel.config.settings`` when it is importable, else the
    environment (the server exports its settings there, for the training subprocess too)."""
    value: Any = ""
    try:
        from monailabel.config import settings

        value = getattr(settings, name, "")
    except ImportError:
        pass
    return str(value or os.environ.get(name, "") or "").strip()


def datastore_folders() -> list[Path] | None:
    """The folders from which a running MONAI Label server hands images to its tasks, or None outside a server.

    A local studies folder (``--studies /data/images``) and MONAI Label's session folder (images uploaded to a
    session); for a remote datastore (``--studies http...``) its local cache instead of the studies folder. A
    DICOMweb datastore (MONAI Label 0.8.5, ``monailabel/datastore/dicom.py``) downloads each series into
    ``<cache>/<md5 of the DICOMweb URL>/<SeriesInstanceUID>/`` and converts it to ``<SeriesInstanceUID>.nii.gz``
    beside it, with ``<cache>`` ``MONAI_LABEL_DICOMWEB_CACHE_PATH`` or ``~/.cache/monailabel/dicom``; only that
    folder is allowed. (The first request for a series gets the conversion's temporary file, which
    :func:`check_datastore_path` allows as it allows uploads.) For XNAT and DSA,
    ``MONAI_LABEL_DATASTORE_CACHE_PATH`` and ``~/.cache/monailabel``. None when no server runs (no
    ``MONAI_LABEL_STUDIES``): a bundle run on its own reads what its datalist names.
    """
    studies = _setting("MONAI_LABEL_STUDIES")
    if not studies:
        return None
    cache = Path.home() / ".cache" / "monailabel"
    folders = [_setting("MONAI_LABEL_SESSION_PATH") or str(cache / "sessions")]
    remote = studies.startswith(("http://", "https://"))
    if remote and _setting("MONAI_LABEL_DATASTORE").lower() not in ("xnat", "dsa"):  # as MONAILabelApp chooses
        # the DICOMweb client's base URL is the --studies URL as given (dicomweb_client keeps it unchanged)
        digest = hashlib.md5(studies.encode("utf-8"), usedforsecurity=False).hexdigest()
        folders.append(os.path.join(_setting("MONAI_LABEL_DICOMWEB_CACHE_PATH") or str(cache / "dicom"), digest))
    elif remote:
        folders += [str(cache), _setting("MONAI_LABEL_DATASTORE_CACHE_PATH")]
    else:
        folders.insert(0, studies)
    return [Path(os.path.realpath(f)) for f in folders if f]


_LINKS_LOCK = threading.Lock()
_LINKS: dict[Path, tuple[int, frozenset[Path]]] = {}


def _link_targets(folder: Path) -> frozenset[Path]:
    """Where the symbolic links directly in ``folder`` and in its ``labels/<tag>`` folders point (MONAI Label's
    datastore resolves links: a studies folder of links to the images hands their targets to the tasks)."""
    found: set[Path] = set()
    for where in [folder, *(p for p in (folder / "labels").glob("*") if p.is_dir())]:
        try:
            stamp = where.stat().st_mtime_ns
        except OSError:
            continue
        with _LINKS_LOCK:
            cached = _LINKS.get(where)
        if cached is None or cached[0] != stamp:
            with os.scandir(where) as entries:
                targets = frozenset(Path(os.path.realpath(e.path)) for e in entries if e.is_symlink())
            cached = (stamp, targets)
            with _LINKS_LOCK:
                _LINKS[where] = cached
        found |= cached[1]
    return frozenset(found)


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_datastore_path(path: str | os.PathLike, folders: Sequence[Path] | None = None, what: str = "image") -> None:
    """Raise :class:`ImageOutsideDatastoreError` when ``path`` (resolved) lies outside the datastore's folders.

    Allowed: files under the folders of :func:`datastore_folders` (or ``folders``), the targets of links in the
    studies folder, and the temporary file in which MONAI Label keeps an image uploaded with the request. Nothing is
    checked outside a MONAI Label server (no folders).
    """
    folders = datastore_folders() if folders is None else list(folders)
    if not folders:
        return
    real = Path(os.path.realpath(path))
    if any(_is_inside(real, folder) for folder in folders):
        return
    if real.parent == Path(os.path.realpath(tempfile.gettempdir())) and _UPLOAD_NAME.fullmatch(real.name):
        return
    if any(real in _link_targets(folder) for folder in folders):
        return
    logger.warning("UNet++: refused %s %s: outside the datastore %s", what, os.fspath(path), os.fspath(folders[0]))
    raise ImageOutsideDatastoreError(
        f"{what} {os.fspath(path)!r} is outside this MONAI Label server's datastore ({os.fspath(folders[0])}): the "
        f"UNet++ model reads only the datastore's images. Ask for an image by its id (GET /datastore/?output=all "
        f"lists them) or upload it, or copy the file into the studies folder."
    )


# ---------------------------------------------------------------------------------------------------------------
# a request's image


class LoadDatastoreImaged(LoadImaged):
    """``LoadImaged`` for the images of MONAI Label requests, checked.

    - The reader defaults to :class:`monai_unetpp.data.SimpleITKReader`, which refuses a truncated or damaged
      NIfTI, NRRD or MetaImage file (MONAI's default reader fills a truncated ``.nii.gz`` with zeros).
    - With ``restrict`` (default), a file outside the datastore of the MONAI Label server that runs the transform
      (:func:`datastore_folders`) is refused with :class:`ImageOutsideDatastoreError` (HTTP 403). Outside a server
      there is no datastore, and nothing is refused.
    - A file that cannot be read raises :class:`CorruptImageRequestError` (HTTP 422, also a ``CorruptImageError``)
      naming the image id, the file and the fix.

    MONAI Label answers both with their status and message (``{"detail": "..."}``), which the viewer shows.

    Args:
        keys: the image keys. Defaults to "image".
        reader: as ``LoadImaged``'s; None is ``SimpleITKReader()``.
        restrict: refuse files outside the server's datastore. Defaults to True.
        kwargs: further ``LoadImaged`` arguments.
    """

    def __init__(
        self, keys: KeysCollection = "image", reader: Any = None, restrict: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(keys, reader=SimpleITKReader() if reader is None else reader, **kwargs)
        self.restrict = restrict

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        names = {
            key: data[key]
            for key in self.key_iterator(dict(data))
            if isinstance(data[key], (str, os.PathLike, list, tuple))
        }
        if self.restrict:
            folders = datastore_folders()
            for value in names.values():
                for path in value if isinstance(value, (list, tuple)) else [value]:
                    if isinstance(path, (str, os.PathLike)):
                        check_datastore_path(path, folders)
        try:
            return super().__call__(data, reader)
        except ImageRequestError:
            raise
        except (CorruptImageError, OSError, RuntimeError, ValueError) as error:
            value = next(iter(names.values()), "")  # the file the reader names, else the first image
            path = getattr(error, "path", None) or os.fspath(
                value[0] if isinstance(value, (list, tuple)) and value else value
            )
            text = str(error).strip().rstrip(".")
            logger.warning("UNet++: image %s cannot be read: %s", path, text)
            raise CorruptImageRequestError(
                f"image {image_id(path)} cannot be read: {text if path in text else f'{path}: {text}'}. Replace the "
                "file in the studies folder (export or upload the image again), or remove it from the datastore.",
                path=path,
            ) from error


# ---------------------------------------------------------------------------------------------------------------
# training pairs


def _shown(values: np.ndarray) -> str:
    return ", ".join(str(v) for v in values[:_SHOWN_VALUES].tolist()) + (", ..." if len(values) > _SHOWN_VALUES else "")


def check_pair(
    item: Mapping[str, Any],
    values: Collection[int] | None = None,
    num_classes: int | None = None,
    spatial_dims: int = 3,
    affine_atol: float = 1e-3,
    folders: Sequence[Path] | None = None,
) -> tuple[str | None, str | None]:
    """Check one (image, label) pair of a datalist before training.

    The files exist, lie in the datastore (``folders``, when given), are complete and readable
    (:func:`monai_unetpp.data.readers.check_image_data`); the image has ``spatial_dims`` spatial axes; the label is
    one channel with the image's shape and, within ``affine_atol`` mm, its affine; the label holds integers >= 0,
    at most ``num_classes - 1`` when ``num_classes`` is given (a bundle's classes). ``values`` (the declared label
    values of a radiology-app model) are not a limit: other values count as background in training, and are named in
    the note.

    Returns:
        ``(problem, note)``: the reason to leave the pair out, or None; a remark on a usable pair, or None.
    """
    if not isinstance(item, Mapping) or not item.get("image"):
        return f"datalist entry {item!r} has no 'image'", None
    image, label = item["image"], item.get("label")
    if not label:
        return f"{as_paths(image)[0]} has no label", None
    image_paths, label_paths = as_paths(image), as_paths(label)
    if len(label_paths) != 1:
        return f"label must be one file, got {label!r}", None
    label_path = label_paths[0]
    try:
        for path, what in [*((p, "image") for p in image_paths), (label_path, "label")]:
            if folders:
                check_datastore_path(path, folders, what)
            if not path.exists():
                return f"{what} file {path} not found", None
            check_image_data(path)
        image_grid, label_grid = image_info(image_paths[0]), image_info(label_path)
        labels = read_label_array(label_path)
    except ImageOutsideDatastoreError as error:
        return str(error), None
    except CorruptImageError as error:
        return str(error), None
    except Exception as error:
        return f"unreadable file ({type(error).__name__}: {error})", None
    if len(image_grid.spatial_shape) != spatial_dims:
        return f"image has shape {image_grid.spatial_shape}, expected {spatial_dims} spatial axes", None
    if label_grid.channels != 1 or label_grid.spatial_shape != image_grid.spatial_shape:
        shape = label_grid.spatial_shape + ((label_grid.channels,) if label_grid.channels != 1 else ())
        return (
            f"label shape {shape} differs from image shape {image_grid.spatial_shape} ({label_path}); submit a label "
            "on the image's grid (the segmentation the server returned for this image has it)"
        ), None
    if not np.allclose(label_grid.affine, image_grid.affine, atol=affine_atol):
        return (
            f"label affine differs from the image's by more than {affine_atol} mm ({label_path}):\n"
            f"{np.round(label_grid.affine, 4)}\nvs\n{np.round(image_grid.affine, 4)}\n"
            "submit a label on the image's grid (resample it, or copy the image's header if only the header is wrong)"
        ), None
    if labels.size == 0:
        return f"label {label_path} is empty", None
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        return (
            f"label holds non-integer values (dtype {labels.dtype}, {label_path}); labels are class values: save them "
            "as integers, without interpolation"
        ), None
    found = np.unique(labels).astype(np.int64)
    bad = found[(found < 0) | (found > num_classes - 1)] if num_classes is not None else found[found < 0]
    if len(bad):
        allowed = f"the classes 0..{num_classes - 1}" if num_classes is not None else "class values (>= 0)"
        return f"label values [{_shown(bad)}] are not {allowed} ({label_path}); remap them", None
    note = None
    if values is not None:
        other = np.setdiff1d(found, [0, *values])
        if len(other):
            note = (
                f"label values [{_shown(other)}] are not among the model's labels {sorted(values)} and train as "
                f"background ({label_path}); declare them (--conf unetpp_labels) if they are structures to learn"
            )
    return None, note


_WARNED_LOCK = threading.Lock()
_WARNED: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], message: str, *args: Any) -> None:
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    logger.warning(message, *args)


def check_training_pairs(
    datalist: Sequence[Mapping[str, Any]],
    values: Collection[int] | None = None,
    num_classes: int | None = None,
    spatial_dims: int = 3,
    split: str = "training",
    required: bool = True,
    restrict: bool = True,
    num_workers: int | None = None,
) -> list[dict]:
    """The pairs of ``datalist`` that pass :func:`check_pair`; each other pair is left out with a warning naming its
    image id, the reason and the fix, so that one bad submission neither corrupts nor blocks training.

    Args:
        datalist: ``[{"image": path, "label": path}, ...]`` (MONAI Label's datastore list, or a bundle's).
        values: the model's declared label values (radiology app); others are noted, not refused.
        num_classes: the bundle's classes, background included: label values must lie in ``0..num_classes - 1``.
        spatial_dims: 2 or 3. Defaults to 3.
        split: the name of the list in the messages. Defaults to "training".
        required: raise :class:`TrainingDataError` when no pair is left. Defaults to True.
        restrict: leave out pairs with a file outside the datastore of the MONAI Label server that runs the
            training (:func:`datastore_folders`; nothing is refused outside a server). Defaults to True.
        num_workers: threads reading the files; defaults to the number of CPUs, at most 8.

    Returns:
        the usable pairs, in their order.

    Raises:
        TrainingDataError: when ``required`` and no pair is usable, listing each pair's problem.
    """
    items = [dict(item) if isinstance(item, Mapping) else item for item in datalist]
    folders = datastore_folders() if restrict else None
    workers = max(1, min(num_workers or min(8, os.cpu_count() or 1), len(items) or 1))

    def run(item: Any) -> tuple[str | None, str | None]:
        return check_pair(item, values, num_classes, spatial_dims, folders=folders)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, items))
    kept: list[dict] = []
    problems: list[str] = []
    for item, (problem, note) in zip(items, results, strict=True):
        name = image_id(as_paths(item.get("image", "?"))[0]) if isinstance(item, Mapping) else repr(item)
        key = (repr(sorted(item.items())) if isinstance(item, Mapping) else repr(item), problem or note or "")
        if problem is not None:
            problems.append(f"{name}: {problem}")
            _warn_once(key, "UNet++ %s: skipping image %s: %s", split, name, problem)
            continue
        if note is not None:
            _warn_once(key, "UNet++ %s: image %s: %s", split, name, note)
        kept.append(item)
    if problems:
        logger.warning("UNet++ %s: %d of %d (image, label) pairs used", split, len(kept), len(items))
    if required and not kept:
        if not items:
            raise TrainingDataError(
                f"no labelled image for {split}: the datastore holds no submitted (final) label; segment an image, "
                "correct it and submit the label, then train."
            )
        listed = "\n".join(f"  - {p}" for p in problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise TrainingDataError(
            f"no usable (image, label) pair for {split}: all {len(items)} were left out:\n{listed}\n"
            "Fix or resubmit those labels (each on its image's grid), then train again."
        )
    return kept


class CheckedCacheDataset(CacheDataset):
    """A ``CacheDataset`` of the pairs of ``data`` that pass :func:`check_training_pairs`, for a bundle's
    ``train.json`` served by MONAI Label: its bundle train task sets ``train#dataset#data`` and
    ``validate#dataset#data`` to the datastore's lists, so the bundle's own data check does not run on them.

    Args:
        data: the (image, label) pairs.
        transform: as ``CacheDataset``'s.
        num_classes: the bundle's classes, background included.
        spatial_dims: 2 or 3. Defaults to 3.
        split: the list's name in the messages. Defaults to "training".
        required: fail when no pair is usable (and no ``fallback``). Defaults to True.
        fallback: pairs to use, checked, when none of ``data`` is usable or ``data`` is empty, e.g. the training
            pairs for validation (MONAI Label's split of two labelled images gives no validation image, and the
            bundle writes ``model.pt`` on validation). Defaults to None.
        check: run the check. Defaults to True.
        kwargs: further ``CacheDataset`` arguments (``cache_rate``, ``num_workers`` ...).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        transform: Any = None,
        num_classes: int | None = None,
        spatial_dims: int = 3,
        split: str = "training",
        required: bool = True,
        fallback: Sequence[Mapping[str, Any]] | None = None,
        check: bool = True,
        **kwargs: Any,
    ) -> None:
        pairs = list(data)
        if check:
            options = {"num_classes": num_classes, "spatial_dims": spatial_dims}
            pairs = check_training_pairs(pairs, split=split, required=required and fallback is None, **options)
            if not pairs and fallback is not None:
                pairs = check_training_pairs(fallback, split=f"{split} (from training)", required=required, **options)
                logger.warning("UNet++ %s: no usable pair: using the %d training pair(s)", split, len(pairs))
        elif not pairs and fallback is not None:
            pairs = list(fallback)
        super().__init__(pairs, transform, **kwargs)
