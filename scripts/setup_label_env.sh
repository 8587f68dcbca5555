#!/usr/bin/env bash
# Creates the virtual environment that runs a MONAI Label server with monai-unetpp's models.
#
# Usage: bash scripts/setup_label_env.sh [VENV_DIR]
#   VENV_DIR defaults to $MONAI_UNETPP_LABEL_VENV, else ~/.cache/monai-unetpp/label-venv.
#
# Idempotent: when the environment already holds the pinned packages it only makes sure that monai-unetpp
# is installed (editable) from this checkout, which takes a few seconds.
# MONAI Label imports torchvision at start, so torch and torchvision must be a matching pair; they are
# installed first and pinned by PYTHON_TORCH_PAIR (override it for another platform, e.g. a CPU-only pair).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${MONAI_UNETPP_LABEL_VENV:-${HOME}/.cache/monai-unetpp/label-venv}}"
PYTHON="${PYTHON:-python3.11}"
TORCH_PAIR="${PYTHON_TORCH_PAIR:-torch==2.14.1 torchvision==0.29.1}"
# The stamp records what the environment was built with; any change rebuilds the packages.
MONAI_PIN="${MONAI_PIN:-monai==1.6.1}"
# The label extra brings dcmqi, whose itkimage2segimage writes the DICOM SEG files of a DICOMweb datastore (images
# from a PACS): without it on PATH, MONAI Label downloads dcmqi from GitHub at every start with --studies http...
# The openvino extra: inference_backend="openvino" for a server without a GPU.
SPEC="${TORCH_PAIR} ${MONAI_PIN}; $(grep -E '^(label|openvino) = ' "${REPO}/pyproject.toml" | tr '\n' ' ')"
STAMP="${VENV}/.monai-unetpp-label-spec"

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${SPEC}" ]]; then
    # -I: neither the current folder nor PYTHONPATH may stand in for the installed package.
    installed_from="$("${VENV}/bin/python" -I -c 'import importlib.util as u, pathlib as p; print(p.Path(u.find_spec("monai_unetpp").origin).parents[1])' 2>/dev/null || true)"
    if [[ "${installed_from}" != "${REPO}" ]]; then
        echo "label venv ${VENV}: pointing monai-unetpp at ${REPO}"
        "${VENV}/bin/pip" install --quiet --no-deps --no-build-isolation -e "${REPO}"
    fi
    echo "label venv ${VENV} is complete"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "${VENV}/bin/python" ]]; then
    mkdir -p "$(dirname "${VENV}")"
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/pip" install --quiet --upgrade pip setuptools wheel
# shellcheck disable=SC2086
"${VENV}/bin/pip" install --quiet ${TORCH_PAIR}
# The pair is held as a constraint so that monailabel's dependencies cannot replace it.
constraints="$(mktemp)"
trap 'rm -f "${constraints}"' EXIT
# shellcheck disable=SC2086
printf '%s\n' ${TORCH_PAIR} ${MONAI_PIN} > "${constraints}"
"${VENV}/bin/pip" install --quiet -c "${constraints}" -e "${REPO}[label,openvino]"
"${VENV}/bin/python" -c 'import monailabel.app, torchvision.ops, openvino, monai_unetpp'
"${VENV}/bin/itkimage2segimage" --version >/dev/null
echo "${SPEC}" > "${STAMP}"
echo "label venv ${VENV} created in $(( $(date +%s) - start )) s, size $(du -sh "${VENV}" | cut -f1)"
