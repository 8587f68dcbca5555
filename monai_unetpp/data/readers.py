# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""A MONAI image reader built on SimpleITK: DICOM series, MetaImage, NRRD, NIfTI and the other ITK formats; and
:func:`check_image_data`, which refuses image files that hold fewer voxels than their header declares."""

from __future__ import annotations

import bz2
import gzip
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import is_supported_format, orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..utils import to_bool

__all__ = [
    "CHECKED_SUFFIXES",
    "CorruptImageError",
    "DamagedImageFile",
    "SimpleITKReader",
    "SIMPLEITK_SUFFIXES",
    "check_image_data",
    "read_dicom_series",
    "sitk_affine",
]

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


CHECKED_SUFFIXES: tuple[str, ...] = ("nii", "nii.gz", "nrrd", "nhdr", "mha", "mhd")
"""File name suffixes whose data :func:`check_image_data` checks against the header (other files pass unchecked)."""

_CHUNK = 1 << 20
_REREAD = "copy, download or convert the file again"


class CorruptImageError(OSError):
    """An image file that holds fewer bytes than its header declares, or whose compressed data is damaged.

    The message starts with the file name; ``path`` is the file (the header file of a detached-data format).
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


class DamagedImageFile:
    """What ``SimpleITKReader.read`` returns for a file that fails :func:`check_image_data`: ``get_data``, and any
    attribute access, raise its :class:`CorruptImageError`."""

    def __init__(self, error: CorruptImageError) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error

    def __repr__(self) -> str:
        return f"DamagedImageFile({str(self.error)!r})"


def _corrupt(path: str | os.PathLike, problem: str, data_file: Path | None = None) -> CorruptImageError:
    where = f"{os.fspath(path)}" if data_file is None else f"{os.fspath(path)} (data file {data_file})"
    return CorruptImageError(f"{where}: truncated or corrupt image file: {problem}; {_REREAD}.", path)


def check_image_data(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptImageError`, naming the file, when an image file holds fewer voxel bytes than its header
    declares, or when its compressed data is damaged.

    SimpleITK (ITK 5.4) fills the missing voxels of a truncated NIfTI (``.nii``, ``.nii.gz``) with zeros without a
    word, and reads a damaged zlib stream of a compressed MetaImage (``.mha``/``.mhd``) into wrong voxels, printing
    "Uncompress failed" only; it does raise for truncated NRRD and MetaImage files, but with messages such as "No
    such file or directory", and MONAI's ``LoadImage`` then tries its other readers. This check gives every case one
    message. It parses the header of NIfTI-1/2
    (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr`` with its detached data file; raw, gzip or bzip2 encoding) and
    MetaImage (``.mha``, ``.mhd``; raw or zlib-compressed), and compares the bytes the header promises with the bytes
    the file holds. Compressed data is decompressed to the end (in 1 MiB pieces), which also verifies its checksum
    (gzip CRC-32, zlib Adler-32, bzip2 CRC); raw data costs one ``stat``. Other formats, ASCII encodings and NRRD or
    MetaImage data split over several files pass unchecked. Damage to uncompressed voxels (flipped bits) cannot be
    seen: such formats carry no checksum.

    Args:
        path: the image file (for ``.nhdr``/``.mhd`` the header; the data file it names is checked).

    Raises:
        CorruptImageError: the file is truncated, its compressed data is damaged, or its header is unreadable.
        FileNotFoundError: the file, or the data file its header names, does not exist.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(tuple(f".{suffix}" for suffix in CHECKED_SUFFIXES)):
        return
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found.")
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def _count_bytes(stream, path: Path, data_file: Path | None) -> int:
    """The bytes a decompressing stream yields up to its end; decompression errors become ``CorruptImageError``."""
    buffer = memoryview(bytearray(_CHUNK))
    total = 0
    try:
        while count := stream.readinto(buffer):
            total += count
    except EOFError as error:
        raise _corrupt(path, f"the compressed data is cut short ({error})", data_file) from None
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise _corrupt(path, f"damaged compressed data ({error})", data_file) from None
    return total


def _shortfall(path: Path, expected: int, found: int, what: str, data_file: Path | None = None) -> CorruptImageError:
    return _corrupt(path, f"the header declares {what} ({expected} bytes) but the file holds {found}", data_file)


# NIfTI


def _nifti_layout(head: bytes, path: Path) -> tuple[int, int, str]:
    """(data offset, data bytes, description) from the first bytes of a NIfTI-1 or NIfTI-2 file."""
    for endian in "<>":
        if len(head) >= 4 and struct.unpack(endian + "i", head[:4])[0] in (348, 540):
            break
    else:
        raise _corrupt(path, f"no NIfTI header (the first {min(len(head), 4)} bytes are {head[:4]!r})")
    version = 1 if struct.unpack(endian + "i", head[:4])[0] == 348 else 2
    size = 348 if version == 1 else 540
    if len(head) < size:
        raise _corrupt(path, f"the NIfTI header is cut short: {len(head)} of {size} bytes")
    if version == 1:
        dims = struct.unpack(endian + "8h", head[40:56])
        bitpix = struct.unpack(endian + "h", head[72:74])[0]
        offset = int(struct.unpack(endian + "f", head[108:112])[0])
        single_file = head[344:347] == b"n+1"
    else:
        dims = struct.unpack(endian + "8q", head[16:80])
        bitpix = struct.unpack(endian + "h", head[14:16])[0]
        offset = struct.unpack(endian + "q", head[168:176])[0]
        single_file = head[4:7] == b"n+2"
    rank = dims[0]
    if not 1 <= rank <= 7 or min(dims[1 : rank + 1]) < 0 or bitpix <= 0:
        raise _corrupt(path, f"invalid NIfTI header (dim {list(dims)}, bitpix {bitpix})")
    if single_file:
        offset = max(offset, size + 4)
    shape = dims[1 : rank + 1]
    nbytes = (math.prod(shape) * bitpix + 7) // 8
    return offset, nbytes, f"{' x '.join(map(str, shape))} voxels of {bitpix} bits from byte {offset}"


def _check_nifti(path: Path) -> None:
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"  # ITK reads a plain file named .nii.gz, so this check does too
        raw.seek(0)
        if not compressed:
            offset, nbytes, what = _nifti_layout(raw.read(544), path)
            found = path.stat().st_size
            if found < offset + nbytes:
                raise _shortfall(path, offset + nbytes, found, what)
            return
        stream = gzip.GzipFile(fileobj=raw)
        try:
            head = stream.read(544)
        except (EOFError, OSError, zlib.error) as error:
            raise _corrupt(path, f"damaged or cut gzip data in the header ({type(error).__name__}: {error})") from None
        offset, nbytes, what = _nifti_layout(head, path)
        found = len(head) + _count_bytes(stream, path, None)
    if found < offset + nbytes:
        raise _shortfall(path, offset + nbytes, found, what + ", decompressed")


# NRRD

_NRRD_TYPE_SIZES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), 2),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int"), 8),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "int64", "int64_t"), 8),
    **dict.fromkeys(("uint64", "uint64_t", "double"), 8),
    "float": 4,
}


def _read_header_lines(raw, path: Path, last: str | None, limit: int = 1 << 20) -> tuple[list[str], int]:
    """Text lines of a header up to a blank line (``last`` None, NRRD) or up to the line starting with ``last``
    (MetaImage), and the byte offset just after it."""
    lines: list[str] = []
    while raw.tell() < limit:
        line = raw.readline(1 << 16)
        if not line:
            break
        text = line.decode("latin-1").rstrip("\r\n")
        if last is None and not text.strip():
            return lines, raw.tell()
        lines.append(text)
        if last is not None and text.strip().lower().startswith(last):
            return lines, raw.tell()
    if last is None:
        return lines, raw.tell()  # a detached header may end without a blank line
    raise _corrupt(path, f"no {last!r} line in the header")


def _header_int(fields: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    try:
        return int(fields[key]) if key in fields else int(default)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _corrupt(path, f"the header's {key!r} field is {fields.get(key)!r}, not a whole number") from None


def _data_path(header: Path, name: str) -> Path:
    data = Path(name)
    data = data if data.is_absolute() else header.parent / data
    if not data.is_file():
        raise FileNotFoundError(f"{header}: its data file {data} is not there; copy it beside the header.")
    return data


def _skip_lines(raw, count: int) -> None:
    for _ in range(max(count, 0)):
        if not raw.readline():
            return


def _check_nrrd(path: Path) -> None:
    with open(path, "rb") as raw:
        if raw.read(7) != b"NRRD000":
            raise _corrupt(path, "no NRRD magic line ('NRRD0004') at the start")
        raw.seek(0)
        lines, header_end = _read_header_lines(raw, path, None)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower().replace(" ", "")] = value.strip()
    type_name = " ".join(fields.get("type", "").lower().split())
    size = _header_int(fields, "blocksize", path) if type_name == "block" else _NRRD_TYPE_SIZES.get(type_name)
    encoding = fields.get("encoding", "").lower()
    data_name = fields.get("datafile", "")
    split_data = data_name.upper().startswith("LIST") or len(data_name.split()) > 1
    if size is None or encoding not in ("raw", "gz", "gzip", "bz2", "bzip2") or split_data:
        return  # an unusual type, an ASCII/hex encoding or data split over files: left to ITK
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
    except (KeyError, ValueError):
        raise _corrupt(path, f"the header's 'sizes' field is {fields.get('sizes')!r}") from None
    expected = math.prod(sizes) * size
    what = f"{' x '.join(map(str, sizes))} {type_name} values, {encoding}"
    data_file = _data_path(path, data_name) if data_name else None
    line_skip = _header_int(fields, "lineskip", path, 0)
    byte_skip = _header_int(fields, "byteskip", path, 0)
    with open(data_file or path, "rb") as raw:
        raw.seek(0 if data_file else header_end)
        _skip_lines(raw, line_skip)
        start = raw.tell()
        if encoding == "raw":
            available = os.fstat(raw.fileno()).st_size - start - max(byte_skip, 0)
            if available < expected:
                raise _shortfall(path, expected, max(available, 0), what, data_file)
            return
        stream = gzip.GzipFile(fileobj=raw) if encoding.startswith("gz") else bz2.BZ2File(raw)
        found = _count_bytes(stream, path, data_file) - max(byte_skip, 0)
    if found < expected:
        raise _shortfall(path, expected, max(found, 0), what + ", decompressed", data_file)


# MetaImage

_MET_TYPE_SIZES = {
    "MET_ASCII_CHAR": 1,
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,  # MetaIO's MET_LONG is 32 bits
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _check_metaimage(path: Path) -> None:
    with open(path, "rb") as raw:
        lines, header_end = _read_header_lines(raw, path, "elementdatafile")
    fields = {}
    for line in lines:
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
    element = fields.get("elementtype", "").upper().removesuffix("_ARRAY")
    data_name = fields.get("elementdatafile", "")
    binary = fields.get("binarydata", "true").lower() in ("true", "1")
    if element not in _MET_TYPE_SIZES or not binary or data_name.upper() == "LIST" or len(data_name.split()) > 1:
        return  # an unusual type, ASCII data or data split over files: left to ITK
    try:
        sizes = [int(s) for s in fields["dimsize"].split()]
    except (KeyError, ValueError):
        raise _corrupt(path, f"the header's 'DimSize' field is {fields.get('dimsize')!r}") from None
    channels = _header_int(fields, "elementnumberofchannels", path, 1)
    expected = math.prod(sizes) * channels * _MET_TYPE_SIZES[element]
    compressed = fields.get("compresseddata", "false").lower() in ("true", "1")
    what = f"{' x '.join(map(str, sizes))} x {channels} {element} values" + (", zlib-compressed" if compressed else "")
    data_file = None if data_name.upper() == "LOCAL" else _data_path(path, data_name)
    header_size = _header_int(fields, "headersize", path, 0) if data_file else 0
    with open(data_file or path, "rb") as raw:
        start = header_end if data_file is None else max(header_size, 0)
        total = os.fstat(raw.fileno()).st_size
        if not compressed:
            available = total - start
            if available < expected:
                raise _shortfall(path, expected, max(available, 0), what, data_file)
            return
        declared = _header_int(fields, "compresseddatasize", path, 0)
        if declared > 0 and total - start < declared:
            raise _corrupt(
                path, f"the header declares {declared} compressed bytes but the file holds {total - start}", data_file
            )
        raw.seek(start)
        found = _count_bytes(_ZlibReader(raw, declared or None), path, data_file)
    if found < expected:
        raise _shortfall(path, expected, found, what + ", decompressed", data_file)


class _ZlibReader:
    """``readinto`` over the one zlib (or gzip) stream that MetaIO reads from ``raw`` (at most ``limit`` bytes of
    it); EOFError when the input ends before the stream's end marker."""

    def __init__(self, raw, limit: int | None) -> None:
        self.raw, self.left = raw, limit
        self.inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a zlib or a gzip header, as MetaIO accepts
        self.input = self.pending = b""

    def _more_input(self) -> bytes:
        size = _CHUNK if self.left is None else min(_CHUNK, self.left)
        chunk = self.raw.read(size) if size > 0 else b""
        if self.left is not None:
            self.left -= len(chunk)
        return chunk

    def readinto(self, buffer: memoryview) -> int:
        while not self.pending:
            if self.inflate.eof:
                return 0
            if not self.input:
                self.input = self._more_input()
            if not self.input:
                self.pending = self.inflate.flush()
                if not self.pending:
                    raise EOFError("the zlib stream ends before its end-of-stream marker")
                break
            self.pending = self.inflate.decompress(self.input, _CHUNK)  # bounded: zeros inflate 1000-fold
            self.input = self.inflate.unconsumed_tail
        count = min(len(self.pending), len(buffer))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


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
        check_data: before reading a NIfTI, NRRD or MetaImage file, check that it holds every voxel its header
            declares and that its compressed data is intact (:func:`check_image_data`): SimpleITK would fill the
            missing voxels of a truncated NIfTI with zeros without a word. Compressed files are decompressed once
            more for this. Defaults to True.
        kwargs: passed to ``SimpleITK.ReadImage`` (for example ``outputPixelType``), for single files.

    Raises:
        CorruptImageError: from ``get_data`` (so from ``LoadImage``), naming the file, for a truncated or damaged
            file (with ``check_data``). ``read`` does not raise it but returns a :class:`DamagedImageFile`: MONAI's
            ``LoadImage`` answers an error in a reader's ``read`` by trying its other readers, and
            ``NibabelReader`` reads a damaged ``.nii.gz`` without noticing (it stops before the gzip checksum),
            while an error in ``get_data`` reaches the caller.

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
        check_data: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_name = series_name
        self.reverse_indexing = to_bool(reverse_indexing, "reverse_indexing")
        self.series_meta = to_bool(series_meta, "series_meta")
        self.affine_lps_to_ras = to_bool(affine_lps_to_ras, "affine_lps_to_ras")
        self.check_data = check_data
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every name is a folder (a DICOM series) or has a suffix in ``SIMPLEITK_SUFFIXES``."""
        return all(
            Path(name).is_dir() or is_supported_format(name, SIMPLEITK_SUFFIXES) for name in ensure_tuple(filename)
        )

    def read(
        self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any
    ) -> sitk.Image | DamagedImageFile | list:
        """Read one image, or a list of images to stack as channels; a folder is read as a DICOM series.

        A file that fails the data check (``check_data``) is not read: it comes back as a
        :class:`DamagedImageFile`, whose error ``get_data`` raises.

        Args:
            data: a file or folder name, or a list of them.
            kwargs: passed to ``SimpleITK.ReadImage``, over the constructor's kwargs.
        """
        options = {**self.kwargs, **kwargs}
        images: list = []
        for name in ensure_tuple(data):
            if Path(name).is_dir():
                images.append(read_dicom_series(name, self.series_name, self.series_meta))
                continue
            if self.check_data:
                try:
                    check_image_data(name)
                except CorruptImageError as error:
                    images.append(DamagedImageFile(error))
                    continue
            images.append(sitk.ReadImage(os.fspath(name), **options))
        return images if len(images) > 1 else images[0]

    def get_data(self, img: sitk.Image | DamagedImageFile | Sequence) -> tuple[np.ndarray, dict]:
        """The array and meta dict of an image, or the channel stack of a list of images (first image's meta).

        Args:
            img: a SimpleITK image or a list of them, as returned by ``read``.

        Raises:
            CorruptImageError: for a file that failed the data check in ``read``, naming it.
        """
        items = img if isinstance(img, (list, tuple)) else [img]  # not ensure_tuple: an Image iterates its pixels
        for item in items:
            if isinstance(item, DamagedImageFile):
                raise item.error
        arrays: list[np.ndarray] = []
        compatible_meta: dict = {}
        for image in items:
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
