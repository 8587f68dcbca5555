# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""A MONAI image reader built on SimpleITK: DICOM series, MetaImage, NRRD, NIfTI and the other ITK formats."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import is_supported_format, orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

__all__ = ["SimpleITKReader", "SIMPLEITK_SUFFIXES", "read_dicom_series", "sitk_affine"]

SIMPLEITK_SUFFIXES: tuple[str, ...] = (
    "nii",
    "nii.gz",
    "mha",
    "mhd",
    "nrrd",
    "nhdr",
    "dcm",
    "hdr",
    "img",
    "gipl",
    "gipl.gz",
    "vtk",
    "mnc",
    "tif",
    "tiff",
    "png",
    "jpg",
    "jpeg",
    "bmp",
)
"""File name suffixes the reader claims; folders are read as DICOM series."""


def sitk_affine(image: sitk.Image, lps_to_ras: bool = True) -> np.ndarray:
    """The 4 x 4 voxel-to-world affine of a SimpleITK image (or of an ``ImageFileReader`` after
    ``ReadImageInformation``), in RAS by default like ``NibabelReader``; 2D images get an identity third axis."""
    rank = min(len(image.GetSpacing()), 3)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(len(image.GetSpacing()), -1)
    affine = np.eye(4)
    affine[:rank, :rank] = direction[:rank, :rank] @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64)[:rank])
    affine[:rank, 3] = np.asarray(image.GetOrigin(), dtype=np.float64)[:rank]
    return orientation_ras_lps(affine) if lps_to_ras else affine


def read_dicom_series(folder: str | os.PathLike, series_name: str = "", load_meta: bool = False) -> sitk.Image:
    """Read one DICOM series from a folder; slices are sorted by position (GDCM).

    Args:
        folder: the folder holding the series' files.
        series_name: the SeriesInstanceUID to read when the folder holds several; the first one by default.
        load_meta: copy the first slice's DICOM tags (``"0010|0010"`` style keys) into the image's metadata.

    Raises:
        FileNotFoundError: when the folder holds no DICOM series or not the requested one.
    """
    folder = os.fspath(folder)
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not series_ids:
        raise FileNotFoundError(f"no DICOM series found in folder {folder}.")
    if series_name and series_name not in series_ids:
        raise FileNotFoundError(f"DICOM series {series_name!r} not in {folder}; it holds {list(series_ids)}.")
    if len(series_ids) > 1 and not series_name:
        warnings.warn(
            f"{folder} holds {len(series_ids)} DICOM series; reading the first, {series_ids[0]}.", stacklevel=2
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_name or series_ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    if load_meta:
        reader.MetaDataDictionaryArrayUpdateOn()
        reader.LoadPrivateTagsOn()
    image = reader.Execute()
    if load_meta:
        for key in reader.GetMetaDataKeys(0):
            image.SetMetaData(key, reader.GetMetaData(0, key))
    return image


class SimpleITKReader(ImageReader):
    """Load medical images with SimpleITK, following the conventions of MONAI's ``ITKReader``.

    SimpleITK reads DICOM series (pass the folder), MetaImage (``.mha``/``.mhd``), NRRD, NIfTI, Analyze and the 2D
    formats, without the large ``itk`` package that ``ITKReader`` needs. The array is returned in the spatial order
    of NIfTI/``NibabelReader`` (x, y, z), with vector pixels as a last channel axis, and the meta dict holds
    ``affine`` and ``original_affine`` (4 x 4, RAS by default, as ``NibabelReader``), ``spatial_shape``,
    ``original_channel_dim``, ``spacing``, ``space`` and the file's own metadata (DICOM tags for series read with
    ``series_meta=True``). A list of files is stacked as channels, like the other MONAI readers.

    Args:
        channel_dim: the channel axis of the data; None (default) sets ``original_channel_dim`` to "no channel"
            for scalar images and -1 for vector images, which is what ``EnsureChannelFirstd`` reads.
        series_name: the SeriesInstanceUID to read from a DICOM folder holding several series.
        reverse_indexing: return the array in SimpleITK/numpy (z, y, x) order instead of (x, y, z). The meta data
            is unchanged. Defaults to False.
        series_meta: copy the first slice's DICOM tags into the meta dict. Defaults to False.
        affine_lps_to_ras: convert ITK's LPS affine to RAS. Defaults to True, as ``NibabelReader``.
        kwargs: passed to ``SimpleITK.ReadImage`` (for example ``outputPixelType``), for single files.

    Examples::

        from monai.transforms import LoadImaged

        loader = LoadImaged(["image", "label"], reader=SimpleITKReader(), ensure_channel_first=True)
        data = loader({"image": "ct/dicom_series_folder", "label": "ct_label.nrrd"})

        # in a bundle config
        "reader": "$monai_unetpp.data.SimpleITKReader()"
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_name: str = "",
        reverse_indexing: bool = False,
        series_meta: bool = False,
        affine_lps_to_ras: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_name = series_name
        self.reverse_indexing = reverse_indexing
        self.series_meta = series_meta
        self.affine_lps_to_ras = affine_lps_to_ras
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every name is a folder (a DICOM series) or has a suffix in ``SIMPLEITK_SUFFIXES``."""
        return all(
            Path(name).is_dir() or is_supported_format(name, SIMPLEITK_SUFFIXES) for name in ensure_tuple(filename)
        )

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> sitk.Image | list:
        """Read one image, or a list of images to stack as channels; a folder is read as a DICOM series.

        Args:
            data: a file or folder name, or a list of them.
            kwargs: passed to ``SimpleITK.ReadImage``, over the constructor's kwargs.
        """
        options = {**self.kwargs, **kwargs}
        images = []
        for name in ensure_tuple(data):
            if Path(name).is_dir():
                images.append(read_dicom_series(name, self.series_name, self.series_meta))
            else:
                images.append(sitk.ReadImage(os.fspath(name), **options))
        return images if len(images) > 1 else images[0]

    def get_data(self, img: sitk.Image | Sequence[sitk.Image]) -> tuple[np.ndarray, dict]:
        """The array and meta dict of an image, or the channel stack of a list of images (first image's meta).

        Args:
            img: a SimpleITK image or a list of them, as returned by ``read``.
        """
        arrays: list[np.ndarray] = []
        compatible_meta: dict = {}
        # not ensure_tuple: a SimpleITK image is itself iterable (over its pixels)
        for image in img if isinstance(img, (list, tuple)) else [img]:
            data = self._get_array_data(image)
            header = self._get_meta_dict(image)
            header[MetaKeys.ORIGINAL_AFFINE] = sitk_affine(image, self.affine_lps_to_ras)
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.SPATIAL_SHAPE] = self._get_spatial_shape(image)
            if self.channel_dim is None:
                spatial_rank = len(header[MetaKeys.SPATIAL_SHAPE])
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if data.ndim == spatial_rank else -1
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            _copy_compatible_dict(header, compatible_meta)
            arrays.append(data)
        return _stack_images(arrays, compatible_meta), compatible_meta

    def _get_meta_dict(self, image: sitk.Image) -> dict:
        meta = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if not key.startswith("ITK_")}
        meta["spacing"] = np.asarray(image.GetSpacing())
        return meta

    def _get_spatial_shape(self, image: sitk.Image) -> np.ndarray:
        size = list(image.GetSize())
        if isinstance(self.channel_dim, int) and image.GetNumberOfComponentsPerPixel() == 1:
            size.pop(self.channel_dim)  # a scalar image whose last axis holds channels (e.g. a 4D NIfTI)
        return np.asarray(size[: min(len(size), 3)])

    def _get_array_data(self, image: sitk.Image) -> np.ndarray:
        array = sitk.GetArrayFromImage(image)  # (z, y, x) or (z, y, x, components)
        if self.reverse_indexing:
            return array
        if image.GetNumberOfComponentsPerPixel() == 1:
            return array.T
        return np.moveaxis(array.T, 0, -1)
