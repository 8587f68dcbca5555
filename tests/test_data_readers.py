# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""SimpleITKReader loads NRRD, MetaImage, DICOM series and NIfTI like MONAI's NibabelReader loads the NIfTI."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.bundle import ConfigParser
from monai.data import NibabelReader
from monai.transforms import LoadImaged

from monai_unetpp.data import CorruptImageError, SimpleITKReader, check_dataset, check_image_data, image_info
from monai_unetpp.utils import keep_locale

SPACING = (0.7, 0.9, 2.5)
ORIGIN_LPS = (-40.0, 25.0, 110.0)
ANGLE = math.radians(30)
# a proper rotation about the slice axis, so that a DICOM series (row, column, slice normal) can hold it
DIRECTION_LPS = np.array([[math.cos(ANGLE), -math.sin(ANGLE), 0.0], [math.sin(ANGLE), math.cos(ANGLE), 0.0], [0, 0, 1]])


def _ras_affine() -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = DIRECTION_LPS @ np.diag(SPACING)
    lps[:3, 3] = ORIGIN_LPS
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _sitk_image(array_xyz: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN_LPS)
    image.SetDirection(DIRECTION_LPS.ravel().tolist())
    return image


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    with keep_locale():  # GDCM's writer would leave the process in the "C" locale
        _write_dicom_slices(image, folder)


def _write_dicom_slices(image: sitk.Image, folder: Path) -> None:
    folder.mkdir()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1234567890"
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0008|103e": "unetpp reader test",
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0037": "\\".join(f"{v:.10f}" for v in (*direction[0::3], *direction[1::3])),
            "0020|0032": "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_)


@pytest.fixture(scope="module")
def volume_files(tmp_path_factory) -> tuple[np.ndarray, dict[str, Path]]:
    root = tmp_path_factory.mktemp("reader")
    array = np.random.default_rng(0).integers(-1000, 1000, size=(20, 14, 6)).astype(np.int16)
    nifti = nib.Nifti1Image(array, _ras_affine())
    nifti.set_qform(_ras_affine(), code=1)
    nifti.set_sform(_ras_affine(), code=1)
    files = {"nii.gz": root / "volume.nii.gz", "nrrd": root / "volume.nrrd", "mha": root / "volume.mha"}
    nib.save(nifti, files["nii.gz"])
    image = _sitk_image(array)  # built from the array and geometry, independent of the NIfTI file
    sitk.WriteImage(image, str(files["nrrd"]))
    sitk.WriteImage(image, str(files["mha"]))
    files["dicom"] = root / "dicom"
    _write_dicom_series(image, files["dicom"])
    return array, files


def _load(path, reader) -> object:
    return LoadImaged("image", reader=reader, ensure_channel_first=True)({"image": str(path)})["image"]


@pytest.mark.parametrize("fmt", ["nii.gz", "nrrd", "mha", "dicom"])
def test_formats_match_nibabel(volume_files, fmt):
    array, files = volume_files
    reference = _load(files["nii.gz"], NibabelReader())
    loaded = _load(files[fmt], SimpleITKReader())
    assert loaded.shape == reference.shape == (1, *array.shape)
    np.testing.assert_allclose(loaded.numpy(), reference.numpy())
    np.testing.assert_allclose(loaded.affine.numpy(), reference.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(loaded.meta["original_affine"], _ras_affine(), atol=1e-4)
    assert list(loaded.meta["spatial_shape"]) == list(array.shape)
    np.testing.assert_allclose(loaded.meta["spacing"], SPACING, atol=1e-5)


def test_dicom_series_meta(volume_files):
    _, files = volume_files
    loaded = _load(files["dicom"], SimpleITKReader(series_meta=True))
    assert loaded.meta["0008|103e"].strip() == "unetpp reader test"
    with pytest.raises(FileNotFoundError, match="not in"):
        SimpleITKReader(series_name="1.2.3").read(files["dicom"])


def test_list_of_files_stacks_channels(volume_files):
    array, files = volume_files
    loaded = LoadImaged("image", reader=SimpleITKReader())({"image": [str(files["nrrd"]), str(files["mha"])]})["image"]
    assert loaded.shape == (2, *array.shape)
    np.testing.assert_array_equal(loaded[1].numpy(), array)


def test_reverse_indexing_and_lps(volume_files):
    array, files = volume_files
    data, meta = (reader := SimpleITKReader(reverse_indexing=True, affine_lps_to_ras=False)).get_data(
        reader.read(files["nrrd"])
    )
    np.testing.assert_array_equal(data, array.T)
    np.testing.assert_allclose(meta["affine"], np.diag([-1.0, -1.0, 1.0, 1.0]) @ _ras_affine(), atol=1e-6)
    assert meta["space"] == "LPS"


def test_2d_and_vector_images(tmp_path):
    scalar = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    nib.save(nib.Nifti1Image(scalar, np.diag([0.8, 0.8, 1.0, 1.0])), tmp_path / "slice.nii.gz")
    reference = _load(tmp_path / "slice.nii.gz", NibabelReader())
    loaded = _load(tmp_path / "slice.nii.gz", SimpleITKReader())
    assert loaded.shape == reference.shape == (1, 12, 10)
    np.testing.assert_array_equal(loaded.numpy(), reference.numpy())
    np.testing.assert_allclose(loaded.affine.numpy(), reference.affine.numpy(), atol=1e-6)

    rgb = np.random.default_rng(1).integers(0, 255, size=(10, 12, 3)).astype(np.uint8)  # (y, x, rgb)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    loaded = _load(tmp_path / "rgb.png", SimpleITKReader())
    assert loaded.shape == (3, 12, 10)
    np.testing.assert_array_equal(loaded.numpy(), np.moveaxis(rgb, -1, 0).transpose(0, 2, 1))


def test_verify_suffix_and_config(volume_files, tmp_path):
    _, files = volume_files
    reader = SimpleITKReader()
    assert reader.verify_suffix(files["nrrd"]) and reader.verify_suffix(files["dicom"])
    assert reader.verify_suffix([files["mha"], files["nii.gz"]])
    assert not reader.verify_suffix(tmp_path / "notes.txt")
    imports = ["$import monai_unetpp", "$import monai_unetpp.data"]  # the second binds the subpackage
    parser = ConfigParser({"imports": imports, "reader": "$monai_unetpp.data.SimpleITKReader()"})
    assert isinstance(parser.get_parsed_content("reader"), SimpleITKReader)


# Truncated and corrupt files: SimpleITK zero-fills a truncated NIfTI without a word; the reader must refuse them.

#: name: (file to read, file that holds the voxels, compressed)
FORMATS = {
    "nii": ("v.nii", "v.nii", False),
    "nii.gz": ("v.nii.gz", "v.nii.gz", True),
    "nrrd": ("v.nrrd", "v.nrrd", False),
    "nrrd-gzip": ("v.nrrd", "v.nrrd", True),
    "nhdr+raw": ("v.nhdr", "v.raw", False),
    "nhdr+raw.gz": ("v.nhdr", "v.raw.gz", True),
    "mha": ("v.mha", "v.mha", False),
    "mha-zlib": ("v.mha", "v.mha", True),
    "mhd+raw": ("v.mhd", "v.raw", False),
    "mhd+zraw": ("v.mhd", "v.zraw", True),
}
DAMAGES = ("cut_half", "cut_last_byte", "corrupt_compressed")


def _write_format(array: np.ndarray, folder: Path, fmt: str) -> tuple[Path, Path]:
    name, data, compressed = FORMATS[fmt]
    folder.mkdir(parents=True)
    use_compression = compressed and fmt != "nii.gz"  # .nii.gz is gzip by its name
    sitk.WriteImage(_sitk_image(array), str(folder / name), useCompression=use_compression)
    assert (folder / data).is_file()
    return folder / name, folder / data


def _damage(path: Path, damage: str) -> None:
    data = bytearray(path.read_bytes())
    if damage == "cut_half":
        data = data[: len(data) // 2]
    elif damage == "cut_last_byte":
        data = data[:-1]
    else:  # flip bytes inside the compressed stream, past the header
        middle = len(data) * 2 // 3
        data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def small_array() -> np.ndarray:
    return np.random.default_rng(3).integers(1, 1000, size=(12, 10, 6)).astype(np.int16)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_valid_files_of_every_checked_format_load_unchanged(small_array, tmp_path, fmt):
    path, _ = _write_format(small_array, tmp_path / "valid", fmt)
    check_image_data(path)
    checked = _load(path, SimpleITKReader())
    unchecked = _load(path, SimpleITKReader(check_data=False))  # what the reader returned before the check
    np.testing.assert_array_equal(checked.numpy()[0], small_array)
    np.testing.assert_array_equal(checked.numpy(), unchecked.numpy())
    np.testing.assert_allclose(checked.affine.numpy(), unchecked.affine.numpy())
    np.testing.assert_allclose(checked.meta["original_affine"], _ras_affine(), atol=1e-4)


@pytest.mark.parametrize(
    ("fmt", "damage"),
    # flipped bits in raw voxels cannot be seen: raw formats carry no checksum
    [(fmt, damage) for fmt in FORMATS for damage in DAMAGES if FORMATS[fmt][2] or damage != "corrupt_compressed"],
)
def test_truncated_or_corrupt_files_raise_naming_the_file(small_array, tmp_path, fmt, damage):
    path, data_file = _write_format(small_array, tmp_path / "damaged", fmt)
    _damage(data_file, damage)
    reader = SimpleITKReader()
    with pytest.raises(CorruptImageError, match="truncated or corrupt image file") as error:
        reader.get_data(reader.read(path))
    assert str(path) in str(error.value) and error.value.path == str(path)
    if data_file != path:
        assert str(data_file) in str(error.value)
    # the bundles' LoadImaged: the error comes through, rather than MONAI trying NibabelReader on the file
    with pytest.raises(CorruptImageError, match="truncated or corrupt image file"):
        _load(path, SimpleITKReader())


def test_simpleitk_alone_zero_fills_a_truncated_nifti(small_array, tmp_path):
    """Why the check exists: without it, half a volume reads as a volume whose other half is background."""
    for fmt in ("nii", "nii.gz"):
        path, data_file = _write_format(small_array, tmp_path / fmt, fmt)
        _damage(data_file, "cut_half")
        loaded = _load(path, SimpleITKReader(check_data=False))
        assert loaded.shape == (1, *small_array.shape) and not np.array_equal(loaded.numpy()[0], small_array)


def test_check_accepts_multimember_gzip_and_plain_data_named_gz(small_array, tmp_path):
    path, _ = _write_format(small_array, tmp_path / "gz", "nii.gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))  # valid gzip, as pigz or cat may write
    check_image_data(path)
    path.write_bytes(raw)  # ITK reads a plain NIfTI named .nii.gz, so the check lets it through
    check_image_data(path)
    np.testing.assert_array_equal(_load(path, SimpleITKReader()).numpy()[0], small_array)
    path.write_bytes(raw[:-1])
    with pytest.raises(CorruptImageError, match="but the file holds"):
        check_image_data(path)


def test_check_refuses_a_missing_data_file_and_a_bad_header(small_array, tmp_path):
    path, data_file = _write_format(small_array, tmp_path / "mhd", "mhd+raw")
    data_file.unlink()
    with pytest.raises(FileNotFoundError, match="data file"):
        check_image_data(path)
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file")
    with pytest.raises(CorruptImageError, match="no NIfTI header"):
        check_image_data(tmp_path / "junk.nii")
    check_image_data(tmp_path / "notes.png")  # formats without a check pass unread


@pytest.mark.parametrize("fmt", ["nii.gz", "nrrd", "dicom"])
def test_the_dataset_checks_read_every_format(volume_files, fmt, tmp_path):
    array, files = volume_files
    info = image_info(files[fmt])
    assert info.spatial_shape == array.shape and info.channels == 1
    np.testing.assert_allclose(info.affine, _ras_affine(), atol=1e-4)
    label = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image((array > 0).astype(np.uint8), _ras_affine()), label)
    assert check_dataset([{"image": str(files[fmt]), "label": str(label)}], num_classes=2) is not None
