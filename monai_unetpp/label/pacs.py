# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""Images from a PACS: a volume written as a DICOM series, put into Orthanc, and a local-only Orthanc configuration.

MONAI Label reads the images of a PACS over DICOMweb (``--studies http://127.0.0.1:8042/dicom-web``). To try that
route without a PACS of your own, write a NIfTI (or NRRD, MetaImage) volume as a DICOM series, start Orthanc with
:func:`orthanc_config` and upload the series with :func:`upload_to_orthanc`; docs/monai_label.md ("Images from a
PACS") has the steps. Needs SimpleITK only (no pydicom, no MONAI Label).

The series follows SimpleITK's "Dicom Series From Array" example (one file per slice written with
``ImageFileWriter`` and ``KeepOriginalImageUIDOn``, the geometry in ImageOrientationPatient and per-slice
ImagePositionPatient); Orthanc's REST API takes each file with ``POST /instances``.

Examples::

    python -m monai_unetpp.label.pacs series case1.nii.gz dicom/case1 --modality CT --upload http://127.0.0.1:8042
    python -m monai_unetpp.label.pacs orthanc-config orthanc/ --http-port 8042
    Orthanc orthanc/orthanc.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..utils import keep_locale

__all__ = [
    "DicomSeries",
    "PLUGIN_FOLDERS",
    "dicomweb_plugin",
    "orthanc_config",
    "upload_to_orthanc",
    "write_dicom_series",
]

#: Where Orthanc packages put the DICOMweb plugin (Debian/Ubuntu first); ``ORTHANC_PLUGINS`` is looked at before.
PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
_MODALITIES = ("CT", "MR")
_INT16 = 32767
_UID_ROOT = "1.2.826.0.1.3680043.2.1125.1"  # the UID root of SimpleITK's example; our UIDs add a time and count


class DicomSeries(dict):
    """What :func:`write_dicom_series` wrote: ``study_uid``, ``series_uid``, ``files`` (one per slice, in slice
    order), ``slope`` and ``intercept`` (stored value x slope + intercept = the volume's value)."""


def _uid(counter: list[int]) -> str:
    counter[0] += 1
    return f"{_UID_ROOT}.{time.time_ns()}.{os.getpid()}.{counter[0]}"


def _rescale(array: np.ndarray, modality: str, source: str) -> tuple[np.ndarray, float, float]:
    """The array to hand GDCM, with the rescale slope and intercept of its 16-bit signed stored values.

    Volumes of whole numbers within int16 are stored as they are (slope 1, intercept 0). Other CT volumes go to
    GDCM as float64 with a slope and intercept that map their range onto [-32767, 32767]; GDCM stores
    ``(value - intercept) / slope`` (as in SimpleITK's example), so a value comes back within half a step,
    (max - min) / 65534 / 2. The MR Image IOD has no rescale: GDCM would switch to Enhanced MR, whose per-frame
    rescale MONAI Label's series reader and dcmqi do not apply, so an MR volume must hold whole numbers.
    """
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{source} holds NaN or infinite values, which a DICOM image cannot store; replace them")
    low, high = float(array.min()), float(array.max())
    if -_INT16 <= low and high <= _INT16 and np.array_equal(array, np.round(array)):
        return array.astype(np.int16), 1.0, 0.0
    if modality != "CT":
        raise ValueError(
            f"{source}: an {modality} series stores whole numbers within +-{_INT16}, and this volume holds values "
            f"{low:.6g} .. {high:.6g} that are not; scale and round it first (e.g. 1000 * (x - min) / (max - min)), "
            "or write it as CT (modality CT), which stores other values with a rescale slope"
        )
    intercept = (high + low) / 2.0
    slope = (high - low) / (2 * _INT16) if high > low else 1.0
    return array.astype(np.float64), slope, intercept


def write_dicom_series(
    image: str | os.PathLike | sitk.Image,
    folder: str | os.PathLike,
    modality: str = "CT",
    patient_id: str = "MONAI-UNETPP-DEMO",
    series_description: str = "monai-unetpp demo",
    study_uid: str | None = None,
) -> DicomSeries:
    """Write a 3D volume as a DICOM series, one file per slice (``slice_0000.dcm``, ...), in ``folder``.

    The series keeps the volume's geometry: each slice's ImagePositionPatient and the ImageOrientationPatient come
    from the volume's origin and direction (SimpleITK's LPS), PixelSpacing and SpacingBetweenSlices from its
    spacing, so a DICOM reader (MONAI Label's DICOMweb datastore, SimpleITK's ``ImageSeriesReader``) gets the
    volume's grid back. A DICOM series is always right-handed (slices follow row x column direction): a
    left-handed volume (e.g. a NIfTI affine with one flipped axis) comes back with the same voxels at the same
    places but the slice axis reversed. Values are stored as 16-bit integers, with a rescale slope and intercept
    for a CT volume of other values (see ``slope``/``intercept`` of the result).

    Args:
        image: a volume file SimpleITK reads (``.nii.gz``, ``.nrrd``, ``.mha``) or a ``SimpleITK.Image``; 3D, one
            channel.
        folder: where the files go; created if missing, and it must hold no ``.dcm`` files yet.
        modality: the series' Modality, "CT" or "MR" (MONAI Label lists only the modality of its search filter,
            ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, CT by default). An MR volume must hold whole numbers within
            int16. Defaults to "CT".
        patient_id: PatientID and PatientName. Defaults to "MONAI-UNETPP-DEMO".
        series_description: SeriesDescription. Defaults to "monai-unetpp demo".
        study_uid: the StudyInstanceUID to add the series to; None makes a new study.

    Returns:
        the UIDs, the files, the slope and intercept.

    Raises:
        FileNotFoundError: no file at ``image``.
        ValueError: a volume that is not 3D with one channel, values an MR series cannot store, an unknown
            modality, or a ``folder`` that holds a series already.

    Examples::

        series = write_dicom_series("case1.nii.gz", "dicom/case1", modality="CT")
        upload_to_orthanc(series["files"], "http://127.0.0.1:8042")
    """
    source = os.fspath(image) if not isinstance(image, sitk.Image) else "the image"
    if not isinstance(image, sitk.Image) and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such volume file; give a .nii.gz, .nrrd or .mha file")
    volume = sitk.ReadImage(source) if not isinstance(image, sitk.Image) else image
    if volume.GetDimension() != 3 or volume.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{source}: a DICOM series holds a 3D volume of one channel, got {volume.GetDimension()}D with "
            f"{volume.GetNumberOfComponentsPerPixel()} channel(s); write each channel or volume on its own."
        )
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(_MODALITIES)}, got {modality!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.dcm")):
        raise ValueError(f"{out} holds .dcm files already; write the series into an empty folder")

    pixels, slope, intercept = _rescale(sitk.GetArrayFromImage(volume), modality, source)  # (slices, rows, columns)
    counter = [0]
    study_uid = study_uid or _uid(counter)
    series_uid, frame_uid = _uid(counter), _uid(counter)
    direction = np.asarray(volume.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    spacing = volume.GetSpacing()
    moment = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    common = {
        "0008|0060": modality,
        "0008|0020": moment[0],  # StudyDate
        "0008|0030": moment[1],  # StudyTime
        "0008|0021": moment[0],  # SeriesDate
        "0008|0031": moment[1],  # SeriesTime
        "0008|103e": series_description,
        "0010|0010": patient_id,
        "0010|0020": patient_id,
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0020|0052": frame_uid,  # FrameOfReferenceUID: the slices share one patient space
        "0020|0011": "1",  # SeriesNumber
        "0020|0037": orientation,
        "0028|0030": f"{spacing[1]:.10g}\\{spacing[0]:.10g}",  # PixelSpacing: row spacing, then column spacing
        "0018|0050": f"{spacing[2]:.10g}",  # SliceThickness
        "0018|0088": f"{spacing[2]:.10g}",  # SpacingBetweenSlices
        "0028|1052": f"{intercept:.10g}",
        "0028|1053": f"{slope:.10g}",
        "0028|1054": "US",  # RescaleType: unspecified
        # 16-bit signed storage, which GDCM must be told for float input
        "0028|0100": "16",
        "0028|0101": "16",
        "0028|0102": "15",
        "0028|0103": "1",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # else GDCM makes new Study/Series UIDs for every file
    files = []
    for k in range(pixels.shape[0]):
        plane = sitk.GetImageFromArray(pixels[k : k + 1])
        plane.SetSpacing(spacing)
        plane.SetDirection(volume.GetDirection())
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        plane.SetOrigin(position)
        tags = {
            **common,
            "0008|0018": _uid(counter),  # SOPInstanceUID
            "0020|0013": str(k + 1),  # InstanceNumber
            "0020|0032": "\\".join(f"{v:.10g}" for v in position),
            "0020|1041": f"{float(np.dot(direction[:, 2], position)):.10g}",  # SliceLocation
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        path = out / f"slice_{k:04d}.dcm"
        writer.SetFileName(str(path))
        with keep_locale():
            writer.Execute(plane)
        files.append(path)
    return DicomSeries(study_uid=study_uid, series_uid=series_uid, files=files, slope=slope, intercept=intercept)


def _orthanc_request(url: str, data: bytes | None, content_type: str | None, auth: str | None, what: str) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        detail = error.read()[:500].decode(errors="replace")
        raise RuntimeError(f"Orthanc refused {what}: HTTP {error.code} from {url}: {detail}") from None
    except urllib.error.URLError as error:
        raise ConnectionError(
            f"cannot reach Orthanc at {url} ({error.reason}); start it (Orthanc <config>.json) and check the URL "
            "(its HTTP port, without /dicom-web)"
        ) from None


def upload_to_orthanc(
    files: Iterable[str | os.PathLike], url: str = "http://127.0.0.1:8042", auth: str | None = None
) -> list[str]:
    """Store DICOM files in Orthanc through its REST API (``POST /instances``, one file per request).

    Args:
        files: the DICOM files, e.g. :func:`write_dicom_series`'s ``files``.
        url: Orthanc's HTTP root (not its ``/dicom-web`` root). Defaults to "http://127.0.0.1:8042".
        auth: ``user:password`` where Orthanc has authentication on; None sends none.

    Returns:
        Orthanc's ids of the stored series, one per series the files belong to, in order of first appearance.

    Raises:
        ConnectionError: Orthanc cannot be reached at ``url``.
        RuntimeError: Orthanc refuses a file (the message names it and gives Orthanc's answer).

    Examples::

        upload_to_orthanc(sorted(Path("dicom/case1").glob("*.dcm")), "http://127.0.0.1:8042")
    """
    series: list[str] = []
    for file in files:
        path = Path(file)
        answer = _orthanc_request(
            url.rstrip("/") + "/instances", path.read_bytes(), "application/dicom", auth, f"file {path}"
        )
        if not isinstance(answer, dict) or answer.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc did not store {path}: {answer!r}")
        if answer["ParentSeries"] not in series:
            series.append(answer["ParentSeries"])
    return series


def dicomweb_plugin(folders: Sequence[str | os.PathLike] | None = None) -> Path:
    """The DICOMweb plugin of the installed Orthanc (``libOrthancDicomWeb.so``).

    Looks in ``$ORTHANC_PLUGINS`` (a folder), then in ``folders`` (default :data:`PLUGIN_FOLDERS`).

    Raises:
        FileNotFoundError: no plugin found; the message gives the install command.
    """
    where = [os.environ["ORTHANC_PLUGINS"]] if os.environ.get("ORTHANC_PLUGINS") else []
    where += [os.fspath(f) for f in (PLUGIN_FOLDERS if folders is None else folders)]
    for folder in where:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"Orthanc's DICOMweb plugin (libOrthancDicomWeb.so) is in none of {', '.join(where)}; install it with "
        "`bash scripts/setup_orthanc.sh` (Debian/Ubuntu: apt-get install orthanc orthanc-dicomweb), or set "
        "ORTHANC_PLUGINS to the folder that holds it."
    )


def orthanc_config(
    folder: str | os.PathLike,
    http_port: int = 8042,
    dicom_port: int | None = None,
    name: str = "MONAI-UNETPP",
    plugin: str | os.PathLike | None = None,
) -> Path:
    """Write ``orthanc.json`` in ``folder``: an Orthanc that keeps its database in ``folder/db``, serves DICOMweb
    at ``http://127.0.0.1:<http_port>/dicom-web/`` and answers HTTP only from this machine.

    Orthanc 1.10 listens on every interface and has no option to bind one; ``RemoteAccessAllowed: false`` makes it
    refuse HTTP requests from other hosts. Its DICOM port (C-STORE, C-FIND) has no such check, so it is off
    unless ``dicom_port`` is given (needed only for modalities that send by DICOM, not for MONAI Label).

    Args:
        folder: the configuration and the database (``db``) go here; created if missing.
        http_port: the HTTP port (REST API and DICOMweb). Defaults to 8042.
        dicom_port: the DICOM port; None turns the DICOM server off. Defaults to None.
        name: Orthanc's name and DICOM AE title. Defaults to "MONAI-UNETPP".
        plugin: the DICOMweb plugin file; None finds it (:func:`dicomweb_plugin`).

    Returns:
        the configuration file; start Orthanc with ``Orthanc <file>``.

    Examples::

        config = orthanc_config("orthanc", http_port=8042)
        # Orthanc orthanc/orthanc.json, then: --studies http://127.0.0.1:8042/dicom-web
    """
    for label, port in (("http_port", http_port), ("dicom_port", dicom_port)):
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ValueError(f"{label} must be a port number 1-65535, got {port!r}")
    root = Path(folder).absolute()
    (root / "db").mkdir(parents=True, exist_ok=True)
    config = {
        "Name": name,
        "DicomAet": name[:16],
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": dicom_port is not None,
        "DicomPort": dicom_port or 4242,
        "Plugins": [str(plugin or dicomweb_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "SaveJobs": False,
    }
    path = root / "orthanc.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m monai_unetpp.label.pacs series|orthanc-config ...`` (``--help`` for the options)."""
    parser = argparse.ArgumentParser(prog="python -m monai_unetpp.label.pacs", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    series = commands.add_parser("series", help="write a volume as a DICOM series, and upload it to Orthanc")
    series.add_argument("image", help="a 3D volume: .nii.gz, .nrrd, .mha")
    series.add_argument("folder", help="an empty (or new) folder for the .dcm files")
    series.add_argument("--modality", default="CT", choices=_MODALITIES, help="MR needs whole numbers")
    series.add_argument("--patient-id", default="MONAI-UNETPP-DEMO")
    series.add_argument("--upload", metavar="ORTHANC_URL", help="e.g. http://127.0.0.1:8042 (not the /dicom-web URL)")
    config = commands.add_parser("orthanc-config", help="write a local-only Orthanc configuration with DICOMweb")
    config.add_argument("folder")
    config.add_argument("--http-port", type=int, default=8042)
    config.add_argument("--dicom-port", type=int, default=None, help="default: DICOM server off")
    args = parser.parse_args(argv)
    try:
        if args.command == "series":
            written = write_dicom_series(args.image, args.folder, args.modality, args.patient_id)
            print(f"wrote {len(written['files'])} slices to {args.folder}: SeriesInstanceUID {written['series_uid']}")
            if args.upload:
                upload_to_orthanc(written["files"], args.upload)
                print(f"stored in Orthanc at {args.upload}; its MONAI Label image id is {written['series_uid']}")
        else:
            path = orthanc_config(args.folder, args.http_port, args.dicom_port)
            print(f"wrote {path}; start: Orthanc {path}")
    except (OSError, ValueError, RuntimeError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
