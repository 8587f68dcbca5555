#!/usr/bin/env bash
# Installs Orthanc (a DICOM server / small PACS) and its DICOMweb plugin from the Debian/Ubuntu archive, for
# trying MONAI Label on images served over DICOMweb (docs/monai_label.md, "Images from a PACS") and for
# tests/test_label_pacs.py.
#
# Usage: bash scripts/setup_orthanc.sh
#
# A no-op when both are installed. The packages' service is not started (and stopped if the packages started
# it): Orthanc's packaged configuration listens on every interface, and the tests and the docs start Orthanc
# with a configuration of their own. Needs root (or sudo) for apt-get; prints the plugin folder at the end.
set -euo pipefail

plugin_dir=/usr/share/orthanc/plugins
have() { command -v Orthanc >/dev/null 2>&1 && compgen -G "${plugin_dir}/libOrthancDicomWeb.so*" >/dev/null; }

if ! have; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup_orthanc.sh: no apt-get here; install Orthanc >= 1.10 with its DICOMweb plugin another way" \
             "(https://orthanc.uclouvain.be/book/users/cookbook.html), e.g. the orthancteam/orthanc Docker image" >&2
        exit 1
    fi
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        sudo="sudo"
    fi
    # A policy-rc.d that answers 101 keeps Debian's maintainer scripts from starting the service; an existing
    # one (Docker images ship one) is left as it is.
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [[ ! -e "${policy}" ]]; then
        printf '#!/bin/sh\nexit 101\n' | ${sudo} tee "${policy}" >/dev/null
        ${sudo} chmod 755 "${policy}"
        added_policy=1
    fi
    ${sudo} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    ${sudo} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc orthanc-dicomweb >/dev/null
    if [[ -n "${added_policy}" ]]; then
        ${sudo} rm -f "${policy}"
    fi
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
        ${sudo} systemctl disable --now orthanc
    fi
fi
have || { echo "setup_orthanc.sh: Orthanc or ${plugin_dir}/libOrthancDicomWeb.so missing after install" >&2; exit 1; }
echo "Orthanc $(Orthanc --version 2>/dev/null | head -n 1 | awk '{print $NF}'), DICOMweb plugin in ${plugin_dir}"
