"""A real MONAI Label server for tests: the label venv, synthetic studies, start/stop by process group, HTTP calls.

The tests run in the system python; the server runs in the MONAI Label virtual environment made by
``scripts/setup_label_env.sh`` (``MONAI_UNETPP_LABEL_VENV``, default ``~/.cache/monai-unetpp/label-venv``) and
imports ``monai_unetpp`` from this checkout. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO

SETUP_COMMAND = "bash scripts/setup_label_env.sh"
# A flipped x axis and anisotropic voxels, so that a result on the wrong grid cannot pass for the image's.
AFFINE = np.array([[-1.2, 0.0, 0.0, 10.0], [0.0, 1.2, 0.0, -5.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


def label_venv() -> Path:
    """The MONAI Label environment; fails (never skips) with the command that creates it when it is missing."""
    venv = Path(os.environ.get("MONAI_UNETPP_LABEL_VENV", Path.home() / ".cache" / "monai-unetpp" / "label-venv"))
    if not (venv / "bin" / "python").is_file() or not (venv / ".monai-unetpp-label-spec").is_file():
        pytest.fail(
            f"MONAI Label environment {venv} is missing or incomplete; create it with `{SETUP_COMMAND}` "
            "(or point MONAI_UNETPP_LABEL_VENV at one)."
        )
    return venv


def venv_python() -> str:
    return str(label_venv() / "bin" / "python")


def server_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MONAI_LABEL_SESSION_PATH"] = str(tmp / "sessions")
    env["PYTHONUNBUFFERED"] = "1"  # the log is read by the tests while the server runs
    # One thread per process: the server and its training subprocess share two cores with the test run, and
    # OpenMP threads spinning against each other make tiny convolutions many times slower.
    env["OMP_NUM_THREADS"] = "1"
    return env


def make_studies(root: Path, labels: dict[str, int], count: int = 4, labelled: int = 3, side: int = 32) -> Path:
    """``count`` NIfTI volumes ``img<i>.nii.gz`` with one bright sphere per label; the first ``labelled`` have
    their label map in ``labels/final`` (the MONAI Label datastore layout)."""
    rng = np.random.default_rng(0)
    (root / "labels" / "final").mkdir(parents=True)
    grid = np.indices((side, side, side))
    for i in range(count):
        image = rng.normal(0.0, 1.0, (side,) * 3).astype(np.float32)
        label = np.zeros((side,) * 3, np.uint8)
        for value in labels.values():
            centre = rng.integers(8, side - 8, size=3).reshape(3, 1, 1, 1)
            sphere = ((grid - centre) ** 2).sum(0) < 25
            image[sphere] += 3.0
            label[sphere] = value
        nib.save(nib.Nifti1Image(image, AFFINE), root / f"img{i}.nii.gz")
        if i < labelled:
            nib.save(nib.Nifti1Image(label, AFFINE), root / "labels" / "final" / f"img{i}.nii.gz")
    return root


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MonaiLabelServer:
    """HTTP access to a started server, and its log."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: dict | None = None, timeout: float = 120.0
    ) -> tuple[int, bytes, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def json(self, method: str, path: str, body: dict | None = None, timeout: float = 120.0) -> dict:
        status, content, _ = self.request(method, path, body, timeout)
        assert status == 200, f"{method} {path} -> {status}: {content[:2000]!r}\n{self.log_tail()}"
        return json.loads(content)

    def log_tail(self, lines: int = 60) -> str:
        return "server log (end):\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def _multipart(self, method: str, path: str, fields: dict[str, bytes | Path]) -> urllib.request.Request:
        """A multipart/form-data request; a Path value is sent as a file upload of that file."""
        boundary = "monai-unetpp-test-boundary"
        body = b""
        for name, value in fields.items():
            disposition = f'form-data; name="{name}"'
            if isinstance(value, Path):
                disposition += f'; filename="{value.name}"'
                value = value.read_bytes()
            body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        return req

    def infer_response(
        self, model: str, image: str = "", params: dict | None = None, upload: Path | None = None
    ) -> tuple[int, bytes]:
        """POST /infer/<model>?image=<id>&output=image as a viewer sends it, with ``upload`` as the ``file`` field
        (an image from the client's disk); returns the status and body, errors included."""
        path = f"/infer/{model}?image={urllib.parse.quote(image)}&output=image"
        fields: dict[str, bytes | Path] = {"params": json.dumps(params or {}).encode()}
        if upload is not None:
            fields["file"] = upload
        try:
            with urllib.request.urlopen(self._multipart("POST", path, fields), timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def infer(self, model: str, image: str, out: Path, params: dict | None = None) -> Path:
        """POST /infer/<model>?image=<id>&output=image; writes the returned label volume to ``out``.

        ``params`` go in the ``params`` form field, where MONAI Label reads a request's options."""
        path = f"/infer/{model}?image={image}&output=image"
        if params:
            req = self._multipart("POST", path, {"params": json.dumps(params).encode()})
        else:
            req = urllib.request.Request(self.url + path, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=300) as response:
                out.write_bytes(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:2000]
            raise AssertionError(f"infer {model} {image} -> {error.code}: {detail!r}\n{self.log_tail()}") from None
        return out

    def submit_label(self, image: str, label: Path) -> dict:
        """PUT /datastore/label?image=<id>&tag=final: what a viewer's "Submit Label" sends."""
        req = self._multipart("PUT", f"/datastore/label?image={image}&tag=final", {"label": label})
        try:
            with urllib.request.urlopen(req, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:2000]
            raise AssertionError(f"submit label {image} -> {error.code}: {detail!r}\n{self.log_tail()}") from None

    def train(self, model: str, params: dict, timeout: float = 600.0) -> dict:
        """POST /train/<model> and wait for the task to end; returns the task (``status`` DONE or ERROR)."""
        task = self.json("POST", f"/train/{model}", params)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.json("GET", "/train/")
            if state["id"] == task["id"] and state["status"] not in ("SUBMITTED", "RUNNING"):
                return state
            time.sleep(2.0)
        raise AssertionError(f"training {model} did not end within {timeout} s\n{self.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (uvicorn, and a training subprocess if one runs)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def running_server(
    app: Path, studies: Path, conf: dict[str, str], tmp: Path, startup_timeout: float = 240.0
) -> Iterator[MonaiLabelServer]:
    """``monailabel start_server`` from the label venv on 127.0.0.1:<free port>; always stopped on exit."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    command: list[str] = [venv_python(), "-m", "monailabel.main", "start_server", "--app", str(app)]
    command += ["--studies", str(studies), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in conf.items():
        command += ["--conf", key, value]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=server_env(tmp), cwd=tmp, start_new_session=True
        )
    server = MonaiLabelServer(process, port, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode} at start\n{server.log_tail(120)}")
            try:
                if server.request("GET", "/info/", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer within {startup_timeout} s\n{server.log_tail()}")
            time.sleep(1.0)
        yield server
    finally:
        _stop(process)


def run_in_venv(args: Sequence[str], tmp: Path) -> str:
    """Run ``python <args>`` in the label venv; returns stdout, fails with the output on a non-zero exit."""
    result = subprocess.run(
        [venv_python(), *args], env=server_env(tmp), cwd=tmp, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def corrected_label(prediction: Path, out: Path, value: int) -> Path:
    """A user's correction of a prediction: a block painted with ``value``, saved on the prediction's grid."""
    predicted = nib.load(prediction)
    data = np.asarray(predicted.dataobj).astype(np.uint8)
    data[8:16, 8:16, 8:16] = value
    nib.save(nib.Nifti1Image(data, predicted.affine), out)
    return out


def assert_label_volume(
    result: Path, image: Path, values: Sequence[int], dtype: np.typing.DTypeLike | None = np.uint8
) -> np.ndarray:
    """The result has the image's shape and affine, holds only background and the declared label values, and is
    stored as ``dtype`` (uint8, what viewers expect of a label map with values below 256; None: not checked)."""
    label, reference = nib.load(result), nib.load(image)
    if dtype is not None:
        assert label.get_data_dtype() == np.dtype(dtype), f"label stored as {label.get_data_dtype()}, not {dtype}"
    assert label.shape == reference.shape, f"label shape {label.shape} != image shape {reference.shape}"
    np.testing.assert_allclose(label.affine, reference.affine, atol=1e-4, err_msg="label affine != image affine")
    data = np.asarray(label.dataobj)
    found = set(np.unique(data).tolist())
    assert found <= {0, *values}, f"label values {sorted(found)} outside background + declared {sorted(values)}"
    return data


def truncated_copy(image: Path, out: Path) -> Path:
    """A copy of ``image`` cut in the middle, as an interrupted upload or copy leaves it."""
    data = image.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def wrong_shape_label(image: Path, out: Path, value: int) -> Path:
    """A label that does not fit its image: half the image's size along the first axis (a correction of another
    image, or of a cropped copy), with the image's affine."""
    reference = nib.load(image)
    shape = (reference.shape[0] // 2, *reference.shape[1:])
    data = np.zeros(shape, np.uint8)
    data[4:12, 4:12, 4:12] = value
    nib.save(nib.Nifti1Image(data, reference.affine), out)
    return out


def outside_image(tmp: Path) -> Path:
    """A valid image outside the studies folder, where a request's absolute path may point."""
    folder = tmp / "outside"
    folder.mkdir(exist_ok=True)
    path = folder / "private.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), AFFINE), path)
    return path


def error_detail(body: bytes) -> str:
    """The message of a MONAI Label error response (FastAPI's ``{"detail": ...}``), else the body as text."""
    try:
        return str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")
