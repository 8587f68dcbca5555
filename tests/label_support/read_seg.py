"""Read DICOM SEG files in the MONAI Label venv (pydicom, pydicom-seg): ``python read_seg.py SEG.dcm OUT.nii.gz ...``.

For each pair, writes the segments as a label volume of segment numbers (pydicom-seg's ``MultiClassReader``, on
the SEG's own grid) to OUT, and prints one JSON list with, per file, its Modality, the referenced series and the
segments (number: label). The test compares them with what it expects; this script checks nothing.
"""

from __future__ import annotations

import json
import sys

import pydicom
import pydicom_seg
import SimpleITK

found = []
for seg_file, out in zip(sys.argv[1::2], sys.argv[2::2], strict=True):
    seg = pydicom.dcmread(seg_file)
    SimpleITK.WriteImage(pydicom_seg.MultiClassReader().read(seg).image, out)
    found.append(
        {
            "modality": seg.Modality,
            "referenced_series": [str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])],
            "segments": {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence},
        }
    )
print(json.dumps(found))
