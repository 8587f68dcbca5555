# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The brain-tissue bundle on real T1 scans: Dice against an ANTs Atropos reference, beside a k-means baseline.

For every scan (a T1 image and its brain mask), on the scan's own grid and inside the brain mask:

- **reference**: ANTs Atropos (PyPI ``antspyx``): intensities clipped to the 1st-99th percentile in the mask, N4
  bias correction in the mask, Atropos with 3 classes, k-means initialisation, MRF smoothing 0.1 (``[0.1,1x1x1]``);
- **baseline**: 3-class k-means of the raw intensities in the mask (1D Lloyd iterations from the 1/6, 1/2 and 5/6
  quantiles);
- **bundle**: the bundle's own ``configs/inference.json`` on the skull-stripped image (image times mask, what its
  README asks for), with ``--model``.

Classes are ordered by mean intensity (CSF < GM < WM in T1). Dice per class and their mean are computed over the
mask's voxels; the bundle's labels outside the mask (dilated by one voxel) are counted separately, as a share of the
mask's voxel count, and a padded copy of each scan (``--pad`` empty voxels on every side, the wide field of view of
an unstripped neck or of a skull-stripped volume) is segmented too.

Scans: ``colin27`` (Debian ``mricron-data``: ``/usr/share/mricron/templates/ch2.nii.gz``, mask ``ch2bet.nii.gz > 0``,
1 mm) and ``mni152`` (the MNI152 2009 template at 1 mm from nilearn, its brain mask > 0.5; also scored against
the bundle's own label of the template, ``monai_unetpp.data.brain.tissue_labels``). ``--scan NAME IMAGE MASK``
adds others; ``--biased NAME`` adds a copy of a scan times a strong smooth bias field (:func:`bias_field`), scored
against the scan's own reference. The references are cached in ``--cache`` (N4 and Atropos take minutes per 1 mm
scan).

Usage (from the repository root; antspyx is a benchmark-only dependency, ``pip install antspyx``)::

    python benchmarks/brain_real_scans.py --model bundles/unetpp_brain_tissue_mri_segmentation/models/model.pt \\
        --out /tmp/real_scans --label shipped

Writes ``real_scans_<label>.json``, ``real_scans_<label>.md`` (the table) and ``real_scans_<label>_<scan>.png``
(montage: image, reference and bundle) to ``--out``. This is an accuracy benchmark: the comparisons are the
reference and the baseline, computed in the same process on the same grid; the CPU model is printed with the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "unetpp_brain_tissue_mri_segmentation"
COLIN27 = Path("/usr/share/mricron/templates")
CLASSES = ("CSF", "GM", "WM")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def dice_per_class(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> list[float]:
    """Dice of classes 1-3 over the mask's voxels (a class missing from both counts as 1)."""
    p, r = pred[mask], reference[mask]
    scores = []
    for k in (1, 2, 3):
        a, b = p == k, r == k
        total = a.sum() + b.sum()
        scores.append(1.0 if total == 0 else float(2.0 * (a & b).sum() / total))
    return scores


def kmeans_labels(image: np.ndarray, mask: np.ndarray, iterations: int = 100) -> np.ndarray:
    """3-class k-means of the intensities in ``mask`` (1D Lloyd), labels 1-3 by increasing centre; 0 outside."""
    values = image[mask].astype(np.float64)
    centres = np.quantile(values, [1 / 6, 1 / 2, 5 / 6])
    for _ in range(iterations):
        assignment = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        new = np.array([values[assignment == k].mean() if (assignment == k).any() else centres[k] for k in range(3)])
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(centres)
    rank = np.empty(3, int)
    rank[order] = np.arange(3)
    labels = np.zeros(image.shape, np.uint8)
    labels[mask] = rank[np.argmin(np.abs(values[:, None] - centres[None]), axis=1)] + 1
    return labels


def atropos_reference(image_file: Path, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The ANTs Atropos reference of the module docstring, labels 1-3 by increasing mean intensity."""
    try:
        import ants
    except ImportError as error:
        raise ImportError("the reference needs antspyx (a benchmark-only dependency): pip install antspyx") from error
    image = np.asarray(nib.load(image_file).dataobj, dtype=np.float32)
    low, high = np.percentile(image[mask], [1, 99])
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(affine))
    a = ants.from_numpy(np.clip(image, low, high), spacing=spacing)
    m = ants.from_numpy(mask.astype(np.float32), spacing=spacing)
    corrected = ants.n4_bias_field_correction(a, mask=m)
    result = ants.atropos(a=corrected, x=m, i="kmeans[3]", m="[0.1,1x1x1]", c="[5,0]")
    segmentation = result["segmentation"].numpy().astype(np.uint8)
    values = corrected.numpy()
    means = [values[segmentation == k].mean() for k in (1, 2, 3)]
    rank = np.zeros(4, np.uint8)
    rank[np.argsort(means) + 1] = np.arange(1, 4)
    return np.where(mask, rank[segmentation], 0).astype(np.uint8)


def bundle_labels(
    image: np.ndarray, affine: np.ndarray, model: Path, bundle: Path, work: Path, name: str, **settings: Any
) -> tuple[np.ndarray, float]:
    """The bundle's inference.json on ``image`` (written as NIfTI with ``affine``), with ``settings`` as
    overrides: its labels and seconds."""
    from monai.bundle import ConfigWorkflow

    case_dir, out_dir, ckpt_dir = work / "in", work / f"out_{name}", work / "models"
    for folder in (case_dir, out_dir, ckpt_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if not (ckpt_dir / "model.pt").exists():
        shutil.copy(model, ckpt_dir / "model.pt")
    case = case_dir / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), case)
    flow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(work),
        **{"dataset#data": [{"image": str(case)}]},
        output_dir=str(out_dir),
        save_montages=False,
        progress_bar=False,
        num_workers=0,
        **settings,
    )
    flow.initialize()
    start = time.perf_counter()
    flow.run()
    seconds = time.perf_counter() - start
    flow.finalize()
    seg = nib.load(out_dir / f"{name}_seg.nii.gz")
    if seg.shape != image.shape or not np.allclose(seg.affine, affine, atol=1e-4):
        raise RuntimeError(f"{name}: the bundle's output is not on the input's grid ({seg.shape} vs {image.shape}).")
    return np.asarray(seg.dataobj).astype(np.uint8), seconds


def load_scans(extra: list[list[str]]) -> list[dict[str, Any]]:
    """The scans of the module docstring (those present) and the ``--scan`` ones."""
    scans = []
    if (COLIN27 / "ch2.nii.gz").is_file():
        scans.append({"name": "colin27", "image": COLIN27 / "ch2.nii.gz", "mask": COLIN27 / "ch2bet.nii.gz"})
    else:
        print("colin27 skipped: apt-get install mricron-data (Debian) puts it in /usr/share/mricron/templates")
    for name, image, mask in extra:
        scans.append({"name": name, "image": Path(image), "mask": Path(mask)})
    return scans


def mni152_scan(work: Path) -> dict[str, Any]:
    """The 1 mm MNI152 2009 template and its brain mask as files, with the bundle's label of the template."""
    from nilearn import datasets

    from monai_unetpp.data.brain import tissue_labels

    template = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    image_file, mask_file = work / "mni152_t1.nii.gz", work / "mni152_mask.nii.gz"
    nib.save(nib.Nifti1Image(template.get_fdata().astype(np.float32), template.affine), image_file)
    nib.save(nib.Nifti1Image((mask.get_fdata() > 0.5).astype(np.uint8), template.affine), mask_file)
    label = tissue_labels(gm, wm, mask.get_fdata())
    return {"name": "mni152", "image": image_file, "mask": mask_file, "own_label": label}


def bias_field(shape: tuple[int, ...]) -> np.ndarray:
    """A strong smooth multiplicative bias field over a volume: ``exp(0.4 z + 0.3 y^2 - 0.2 x)`` with each axis
    spanning [-1, 1]: from 0.55 to 2.5 times the intensity (x0.67 to x1.5 along the third axis alone)."""
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    return np.exp(0.4 * z + 0.3 * y**2 - 0.2 * x).astype(np.float32)


def biased_scan(scan: dict[str, Any], work: Path) -> dict[str, Any]:
    """``scan`` times :func:`bias_field`, written to ``work``; scored against the reference of ``scan`` itself."""
    source = nib.load(scan["image"])
    image = np.asarray(source.dataobj, dtype=np.float32)
    path = work / f"{scan['name']}_biased.nii.gz"
    nib.save(nib.Nifti1Image(image * bias_field(image.shape), source.affine), path)
    return {
        **scan,
        "name": f"{scan['name']}_biased",
        "image": path,
        "reference_of": scan["name"],
        "reference_image": scan["image"],
    }


def montage(filename: Path, image: np.ndarray, reference: np.ndarray, pred: np.ndarray, affine: np.ndarray) -> None:
    from monai_unetpp.visualize import save_montage

    spacing = nib.affines.voxel_sizes(affine)
    names = ["background", "CSF", "grey matter", "white matter"]
    save_montage(filename, image[None], pred[None], reference[None], class_names=names, spacing=spacing)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the bundle's model.pt to measure")
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle folder (its configs/inference.json)")
    parser.add_argument("--label", default="bundle", help="name of this model in the output files")
    parser.add_argument("--out", type=Path, default=Path("real_scans"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "brain_real_scans_cache")
    parser.add_argument("--scan", nargs=3, action="append", default=[], metavar=("NAME", "IMAGE", "MASK"))
    parser.add_argument("--pad", type=int, default=40, help="empty voxels on every side of the padded copy, 0: none")
    parser.add_argument("--no-mni152", action="store_true", help="leave the MNI152 template out")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="measure these scans only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-refine",
        action="store_true",
        help="the network's own labels: inference with refine_with_intensities=false",
    )
    parser.add_argument("--backend", default="torch", help="the bundle's inference_backend (torch, openvino)")
    parser.add_argument("--precision", default="fp32", help="the bundle's inference_precision (fp32, bf16, int8)")
    parser.add_argument(
        "--biased",
        nargs="+",
        default=[],
        metavar="NAME",
        help="also score a copy of these scans times a strong smooth bias field (bias_field), against the reference "
        "of the scan itself: the bias field a real scan may have, on a development scan",
    )
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"--model {args.model} is not a file; train the bundle or pass its models/model.pt.")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    cpu = f"{cpu_model()}, {args.threads} torch thread(s), torch {torch.__version__}"
    print(f"CPU: {cpu}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scans = load_scans(args.scan) + ([] if args.no_mni152 else [mni152_scan(work)])
        scans = [scan for scan in scans if args.only is None or scan["name"] in args.only]
        scans += [biased_scan(scan, work) for scan in scans if scan["name"] in args.biased]
        for scan in scans:
            name = scan["name"]
            image_nii = nib.load(scan["image"])
            image = np.asarray(image_nii.dataobj, dtype=np.float32)
            mask = np.asarray(nib.load(scan["mask"]).dataobj) > (0.5 if name.startswith("mni152") else 0)
            if mask.shape != image.shape:
                raise SystemExit(f"{name}: mask {scan['mask']} has shape {mask.shape}, image {image.shape}.")
            affine = image_nii.affine
            cached = args.cache / f"{scan.get('reference_of', name)}_atropos.nii.gz"
            start = time.perf_counter()
            if cached.is_file():
                reference = np.asarray(nib.load(cached).dataobj).astype(np.uint8)
            else:
                reference = atropos_reference(Path(scan.get("reference_image", scan["image"])), mask, affine)
                nib.save(nib.Nifti1Image(reference, affine), cached)
            reference_s = time.perf_counter() - start
            baseline = kmeans_labels(image, mask)
            stripped = image * mask
            settings = {"inference_backend": args.backend, "inference_precision": args.precision}
            if args.no_refine:
                settings["refine_with_intensities"] = False
            pred, seconds = bundle_labels(stripped, affine, args.model, args.bundle, work, name, **settings)
            outside = ~_dilate(mask)
            if args.pad:
                padded = np.pad(stripped, args.pad)
                pad_affine = affine.copy()
                pad_affine[:3, 3] -= affine[:3, :3] @ np.full(3, args.pad)
                pred_padded, _ = bundle_labels(
                    padded, pad_affine, args.model, args.bundle, work, f"{name}_padded", **settings
                )
                padded_outside = ~_dilate(np.pad(mask, args.pad))
                padded_scores = {
                    "bundle_padded_outside_mask": float((pred_padded[padded_outside] > 0).sum() / mask.sum()),
                    "bundle_padded_dice": dice_per_class(
                        pred_padded[tuple(slice(args.pad, -args.pad) for _ in range(3))], reference, mask
                    ),
                }
            else:
                padded_scores = {}
            row = {
                "scan": name,
                "shape": list(image.shape),
                "spacing_mm": [round(float(s), 3) for s in nib.affines.voxel_sizes(affine)],
                "brain_voxels": int(mask.sum()),
                "reference_fractions": [float((reference[mask] == k).mean()) for k in (1, 2, 3)],
                "bundle_fractions": [float((pred[mask] == k).mean()) for k in (1, 2, 3)],
                "baseline_dice": dice_per_class(baseline, reference, mask),
                "bundle_dice": dice_per_class(pred, reference, mask),
                "bundle_outside_mask": float((pred[outside] > 0).sum() / mask.sum()),
                **padded_scores,
                "bundle_seconds": round(seconds, 1),
                "reference_seconds": round(reference_s, 1),
            }
            if "own_label" in scan:
                row["bundle_dice_own_label"] = dice_per_class(pred, scan["own_label"], mask)
                row["baseline_dice_own_label"] = dice_per_class(baseline, scan["own_label"], mask)
            for key in ("baseline_dice", "bundle_dice", "bundle_padded_dice"):
                if key in row:
                    row[key.replace("dice", "mean")] = float(np.mean(row[key]))
            rows.append(row)
            print(json.dumps(row))
            montage(args.out / f"real_scans_{args.label}_{name}.png", stripped, reference, pred, affine)

    results = {
        "model": str(args.model),
        "label": args.label,
        "cpu": cpu,
        "runtime": f"{args.backend} {args.precision}",
        "pad": args.pad,
        "rows": rows,
    }
    (args.out / f"real_scans_{args.label}.json").write_text(json.dumps(results, indent=4) + "\n")
    table = [
        "| scan | grid | k-means mean Dice | bundle CSF / GM / WM | bundle mean Dice | bundle CSF share (reference) "
        "| tissue outside the mask | same, padded by " + str(args.pad) + " | inference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        grid = "x".join(str(s) for s in r["shape"]) + " @ " + "x".join(f"{s:g}" for s in r["spacing_mm"]) + " mm"
        table.append(
            f"| {r['scan']} | {grid} | {r['baseline_mean']:.3f} | "
            + " / ".join(f"{d:.3f}" for d in r["bundle_dice"])
            + f" | **{r['bundle_mean']:.3f}** | {r['bundle_fractions'][0]:.1%} ({r['reference_fractions'][0]:.1%}) "
            f"| {r['bundle_outside_mask']:.2%} | {padded_cell(r)} | {r['bundle_seconds']:.0f} s |"
        )
    (args.out / f"real_scans_{args.label}.md").write_text(
        "\n".join(table) + f"\n\nCPU: {cpu}; runtime: {args.backend} {args.precision}\n"
    )
    print("\n".join(table))
    return results


def padded_cell(row: dict[str, Any]) -> str:
    """The padded copy's share of tissue outside the mask, or "not run" (``--pad 0``)."""
    return f"{row['bundle_padded_outside_mask']:.2%}" if "bundle_padded_outside_mask" in row else "not run"


def _dilate(mask: np.ndarray) -> np.ndarray:
    from monai_unetpp.transforms import nonzero_region

    return nonzero_region(torch.as_tensor(mask)[None], 1)[0].numpy()


if __name__ == "__main__":
    main()
