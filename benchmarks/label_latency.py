"""Client-side latency of a MONAI Label server with a UNet++ model: one request at a time, then N at once.

Run by hand in the MONAI Label venv (``bash scripts/setup_label_env.sh``), from the repository root::

    ~/.cache/monai-unetpp/label-venv/bin/python benchmarks/label_latency.py --route bundle
    ~/.cache/monai-unetpp/label-venv/bin/python benchmarks/label_latency.py --route radiology
    ~/.cache/monai-unetpp/label-venv/bin/python benchmarks/label_latency.py --route radiology \
        --backend openvino --precision int8

``--route bundle`` serves the main job's model (``demo/unetpp_3d_segmentation``, made by
``bash scripts/main_job.sh``) with MONAI Label's monaibundle app, as docs/monai_label.md's route 1 says;
``--route radiology`` the app of ``make_app`` with its default model (widths 32-32-64-128-256, 96^3 window,
untrained: the time does not depend on the weights), route 2. The studies are the main job's test images.

Each request is ``MONAILabelClient.infer`` (``POST /infer/<model>?image=<id>``, the label file back), timed by the
client from request to file. After one warm-up request: ``--single`` requests one after another, then
``--concurrent`` requests sent at once from as many threads (images in turn; MONAI Label 0.8.5 answers them one
after another: its async ``/infer`` endpoint runs the model on the event loop). Prints p50/p95/max per phase, the
wall time of the concurrent phase, the CPU model, the torch threads and the load average (the server shares the
machine with whatever else runs). The server listens on 127.0.0.1 only and is stopped at the end.

There is no BasicUNetPlusPlus ratio here: MONAI's network has no MONAI Label task to serve it; the network-level
comparison is ``benchmarks/benchmark.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from monailabel.client import MONAILabelClient

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "unetpp_3d_segmentation"


def cpu_model() -> str:
    """The model name, with the matrix and bf16 extensions that torch's CPU kernels use when present."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{names[0] if names else platform.processor() or 'unknown CPU'} ({', '.join(extras) or 'no AVX-512'})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(route: str, work: Path, bundle: Path, backend: str, precision: str) -> tuple[Path, str, dict[str, str]]:
    """The app folder, the model name and the ``--conf`` settings of the route, as the docs give them."""
    python = [sys.executable, "-m"]
    if route == "bundle":
        if not (bundle / "models" / "model.pt").is_file():
            sys.exit(f"{bundle}/models/model.pt is missing: run `bash scripts/main_job.sh` first")
        subprocess.run([*python, "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output",
                        str(work / "apps")], check=True, capture_output=True)  # fmt: skip
        app = work / "apps" / "monaibundle"
        shutil.copytree(bundle, app / "model" / BUNDLE, ignore=shutil.ignore_patterns("eval", "runs", "data"))
        return app, BUNDLE, {"models": BUNDLE, "zoo_source": "ngc", "sam2": "false"}
    app = work / "apps" / "radiology"
    labels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]
    names = [n for k, n in sorted(labels["pred"]["channel_def"].items(), key=lambda kv: int(kv[0])) if k != "0"]
    subprocess.run([*python, "monai_unetpp.label.make_app", str(app), "--labels", ",".join(names),
                    "--target-spacing", "1.5,1.5,2"], check=True, capture_output=True)  # fmt: skip
    runtime = {"unetpp_inference_backend": backend, "unetpp_inference_precision": precision}
    return app, "segmentation_unetpp", {"models": "segmentation_unetpp", "sam2": "false", **runtime}


def percentiles(values: list[float]) -> str:
    v = np.asarray(values)
    return f"p50 {np.percentile(v, 50):.2f} s, p95 {np.percentile(v, 95):.2f} s, max {v.max():.2f} s (n={len(v)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--route", choices=("bundle", "radiology"), default="bundle")
    parser.add_argument("--bundle", type=Path, default=REPO / "demo" / BUNDLE, help="the main job's bundle")
    parser.add_argument("--single", type=int, default=5, help="requests one after another")
    parser.add_argument("--concurrent", type=int, default=20, help="requests sent at once")
    parser.add_argument("--backend", default="torch", help="route radiology: the task's inference_backend")
    parser.add_argument("--precision", default="fp32", help="route radiology: the task's inference_precision")
    args = parser.parse_args()
    if args.route == "bundle" and (args.backend, args.precision) != ("torch", "fp32"):
        parser.error("--backend and --precision set the radiology app's task (--route radiology)")
    # `timeout` and Ctrl-C leave through the finally below, which stops the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("label_latency: stopped by SIGTERM"))

    work = Path(tempfile.mkdtemp(prefix="label_latency_"))
    studies = work / "studies"
    shutil.copytree(args.bundle / "data" / "imagesTs", studies)
    images = sorted(p.name.split(".")[0] for p in studies.glob("*.nii.gz"))
    app, model, conf = prepare(args.route, work, args.bundle, args.backend, args.precision)

    port = free_port()
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    for key, value in conf.items():
        command += ["--conf", key, value]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MONAI_LABEL_SESSION_PATH": str(work / "sessions")}
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                sys.exit(f"the server exited with {server.returncode}; see {work / 'server.log'}")
            try:
                urllib.request.urlopen(f"{url}/info/", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"the server did not answer in 300 s; see {work / 'server.log'}")
                time.sleep(1)

        def infer(i: int) -> float:
            client = MONAILabelClient(url, tmpdir=str(work / f"client_{i}"))
            start = time.perf_counter()
            label, _ = client.infer(model, images[i % len(images)], {})
            elapsed = time.perf_counter() - start
            os.unlink(label)
            return elapsed

        load_before = os.getloadavg()
        warm = infer(0)
        single = [infer(i) for i in range(args.single)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
            concurrent = list(pool.map(infer, range(args.concurrent)))
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
    finally:
        # uvicorn finishes the requests in flight on SIGTERM; a server still busy after 30 s is killed
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()

    import torch

    threads = os.environ.get("OMP_NUM_THREADS", f"torch's default, {torch.get_num_threads()}")
    print(f"route {args.route}: model {model}, {len(images)} images from {args.bundle / 'data' / 'imagesTs'}")
    if args.route == "radiology":
        print(f"inference: {args.backend} {args.precision}")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch kernels {torch.backends.cpu.get_cpu_capability()}")
    print(f"torch {torch.__version__}, server threads: {threads}")
    print(f"load average (1 min): {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"warm-up request: {warm:.2f} s")
    print(f"one at a time: {percentiles(single)}")
    print(f"{args.concurrent} at once: {percentiles(concurrent)}; all answered in {wall:.2f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
