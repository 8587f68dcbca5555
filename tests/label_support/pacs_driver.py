"""Orthanc + MONAI Label + MONAI Label's client, run inside a private network namespace by tests/test_label_pacs.py.

Run in the MONAI Label venv as ``unshare -rn python pacs_driver.py WORK``: the namespace holds only a loopback
interface, brought up here, so nothing outside can reach the servers (Orthanc 1.10 cannot bind one address).
``WORK/job.json`` names the app (made here with ``make_app``'s command line), the volume and the labels. The
driver starts Orthanc with its own configuration (free ports, database in WORK), prints ``READY <orthanc port>
<dicom port> <monailabel port>`` once both servers answer and waits for a line on stdin (the test checks meanwhile
that the ports are closed outside), then plays what a viewer does with ``monailabel.client.MONAILabelClient`` and
writes what it got to ``WORK/facts.json`` (files in WORK). Both servers are stopped by process id at the end,
whatever happened. The test, not this script, checks the results; this script only fails when a step cannot run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

import SimpleITK
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelUtils

from monai_unetpp.label.make_app import main as make_app
from monai_unetpp.label.pacs import orthanc_config, upload_to_orthanc, write_dicom_series

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """``ip link set lo up`` without iproute2: a new network namespace starts with its loopback down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-4000:]}") from None
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> int:
    """Stop a server's process group by its id (uvicorn and its children; Orthanc); returns the exit status."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def seg_series(orthanc: str) -> list[str]:
    """SeriesInstanceUIDs of the SEG series in Orthanc (DICOMweb QIDO-RS)."""
    found = get_json(f"{orthanc}/dicom-web/series?Modality=SEG")
    return sorted(entry["0020000E"]["Value"][0] for entry in found or [])


def download_series_file(orthanc: str, series_uid: str, out: Path) -> Path:
    """The first instance of a series, as Orthanc stores it (REST API: find the series, then its file)."""
    (series_id,) = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"{orthanc}/tools/find",
                data=json.dumps({"Level": "Series", "Query": {"SeriesInstanceUID": series_uid}}).encode(),
                method="POST",
            ),
            timeout=30,
        ).read()
    )
    instance = get_json(f"{orthanc}/series/{series_id}")["Instances"][0]
    out.write_bytes(urllib.request.urlopen(f"{orthanc}/instances/{instance}/file", timeout=30).read())
    return out


def scenario(work: Path, job: dict, facts: dict, processes: list[subprocess.Popen]) -> None:
    loopback_up()
    facts["interfaces"] = sorted(name for _, name in socket.if_nameindex())  # this namespace's, unlike /sys
    http_port, dicom_port, label_port = free_port(), free_port(), free_port()
    config = orthanc_config(work / "orthanc", http_port=http_port, dicom_port=dicom_port)
    facts["orthanc_config"] = json.loads(config.read_text())
    orthanc = f"http://127.0.0.1:{http_port}"
    orthanc_log = work / "orthanc.log"
    with open(orthanc_log, "wb") as out:
        processes.append(
            subprocess.Popen(["Orthanc", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )
    wait_for(f"{orthanc}/system", processes[-1], orthanc_log, 60)
    facts["orthanc_version"] = get_json(f"{orthanc}/system")["Version"]

    # the volume as an MR series, uploaded through Orthanc's REST API
    series = write_dicom_series(job["volume"], work / "series", modality="MR")
    upload_to_orthanc(series["files"], orthanc)
    facts["series_uid"] = series["series_uid"]
    facts["series_dir"] = str(work / "series")

    # the radiology app as make_app writes it, with the test's seeded weights as the pretrained model
    make_app(job["make_app"])
    model_dir = Path(job["app"]) / "model"
    model_dir.mkdir(exist_ok=True)
    shutil.copy(job["pretrained"], model_dir / f"pretrained_{job['model']}.pt")

    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # dcmqi's itkimage2segimage
            "MONAI_LABEL_DICOMWEB_SEARCH_FILTER": json.dumps({"Modality": "MR"}),
            "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(work / "dicom-cache"),
            "MONAI_LABEL_DICOMWEB_CACHE_EXPIRY": "1",  # seconds MONAI Label keeps Orthanc's series lists
            "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    studies = f"{orthanc}/dicom-web"
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", job["app"], "--studies", studies]
    command += ["--host", "127.0.0.1", "--port", str(label_port)]
    command += ["--conf", "models", job["model"], "--conf", "sam2", "false"]
    label_log = work / "monailabel.log"
    with open(label_log, "wb") as out:
        processes.append(
            subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
        )
    server = f"http://127.0.0.1:{label_port}"
    wait_for(f"{server}/info/", processes[-1], label_log, 240)

    print(f"READY {http_port} {dicom_port} {label_port}", flush=True)
    sys.stdin.readline()  # the test checks from outside that the ports are closed there

    client = MONAILabelClient(server, tmpdir=str(work / "client"))
    info = client.info()
    facts["info_labels"] = info["models"][job["model"]]["labels"]
    facts["info_datastore"] = info["datastore"]
    facts["next_sample"] = client.next_sample("random", {})
    image_id = facts["series_uid"]

    # inference: the first request converts the downloaded series, the second reads the datastore's copy
    for n in (1, 2):
        label, params = client.infer(job["model"], image_id, {})
        facts[f"label_{n}"] = str(Path(label).rename(work / f"label_{n}.nii.gz"))
    facts["cache_files"] = sorted(str(p.relative_to(work)) for p in (work / "dicom-cache").rglob("*.nii.gz"))
    facts["datastore_objects"] = sorted(client.datastore().get("objects", {}))

    # a DICOM SEG of the prediction, as OHIF asks for it. MONAI Label pairs label_info with the values present in
    # the prediction by position (ascending), so it names those, as a viewer showing the prediction would.
    names = {value: name for name, value in job["labels"].items()}
    present = sorted(set(SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(facts["label_1"])).ravel().tolist()))
    facts["present_values"] = [v for v in present if v != 0]
    label_info = [{"name": names[v]} for v in facts["present_values"]]
    status, body, _, _ = MONAILabelUtils.http_multipart(
        "POST",
        server,
        f"/infer/{job['model']}?image={image_id}&output=dicom_seg",
        {"params": json.dumps({"label_info": label_info})},
        {},
    )
    facts["dicom_seg_status"] = status
    if status == 200:
        (work / "inferred_seg.dcm").write_bytes(body)
    else:
        facts["dicom_seg_error"] = body.decode(errors="replace")[:2000]

    # a correction saved back: MONAI Label stores it in Orthanc as a DICOM SEG of the image series
    facts["seg_series_before"] = seg_series(orthanc)
    correction = job["correction"]
    facts["save_label"] = client.save_label(
        image_id, correction, tag="final", params={"label_info": [{"name": n} for n in job["correction_names"]]}
    )
    facts["seg_series_after"] = seg_series(orthanc)
    new = sorted(set(facts["seg_series_after"]) - set(facts["seg_series_before"]))
    facts["stored_seg"] = [
        str(download_series_file(orthanc, uid, work / f"stored_seg_{i}.dcm")) for i, uid in enumerate(new)
    ]
    # MONAI Label counts the series as labelled once its list of SEG series expires
    # (MONAI_LABEL_DICOMWEB_CACHE_EXPIRY seconds, 1 here)
    deadline = time.monotonic() + 30
    while True:
        facts["info_datastore_after"] = client.info()["datastore"]
        if facts["info_datastore_after"]["completed"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)


def main() -> int:
    # the test's watchdog sends SIGTERM: leave through the finally below, which stops the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("pacs_driver: stopped by SIGTERM"))
    work = Path(sys.argv[1])
    job = json.loads((work / "job.json").read_text())
    facts: dict = {}
    processes: list[subprocess.Popen] = []
    try:
        scenario(work, job, facts, processes)
    except BaseException:
        facts["error"] = traceback.format_exc()
        print("READY failed", flush=True)  # unblocks a test still waiting for the servers
    finally:
        facts["exit_status"] = [stop(p) for p in reversed(processes)]
        facts["stopped"] = all(p.poll() is not None for p in processes)
        (work / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
    return 1 if "error" in facts else 0


if __name__ == "__main__":
    sys.exit(main())
