# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""``UnetppAlgo``: UNet++ as an Auto3DSeg algorithm (``monai.apps.auto3dseg.BundleAlgo``).

Follows the interface of Auto3DSeg's own templates (Project-MONAI/research-contributions,
``auto3dseg/algorithm_templates/segresnet/scripts/algo.py``): ``fill_template_config`` turns the data statistics
into the configs of a fold, ``train`` runs ``scripts/train.py`` (one process, ``torchrun`` over the visible GPUs, or
``bcprun`` over nodes, as Auto3DSeg's device settings say), ``get_score`` gives the fold's best validation Dice for
the ensemble's ranking, and ``get_inferer``/``predict`` give the per-image class probabilities that the ensemble
averages.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from monai.apps.auto3dseg import BundleAlgo
from monai.auto3dseg.utils import _prepare_cmd_bcprun, _prepare_cmd_default, _run_cmd_bcprun
from monai.bundle import ConfigParser
from monai.utils import run_cmd

from ..bundle.checkpoint import best_record
from .generate import DATALIST, FRAGMENT, bundle_fragment, class_names, fold_datalist, read_config_file, write_algorithm
from .infer import InferClass
from .params import RESERVED_NAMES, command_value

__all__ = ["UnetppAlgo", "inference_configs", "training_configs"]

logger = logging.getLogger(__name__)

# BundleGen's keyword arguments that are not config values
_GENERATION_OPTIONS = ("fold", "fill_with_datastats", "gpu_customization", "gpu_customization_specs", "bundle_root")


def training_configs(algo_dir: str | os.PathLike, multi_gpu: bool = False) -> list[str]:
    """The config files of a fold's training, in the order they are layered: the bundle's ``train.json``, its
    ``multi_gpu_train.json`` for a distributed run, then the generated fragment."""
    configs = Path(algo_dir) / "configs"
    names = ["train.json", *(["multi_gpu_train.json"] if multi_gpu else []), FRAGMENT]
    return [(configs / name).as_posix() for name in names]


def inference_configs(algo_dir: str | os.PathLike) -> list[str]:
    """The config files of a fold's inference: the bundle's ``inference.json``, then the generated fragment."""
    configs = Path(algo_dir) / "configs"
    return [(configs / name).as_posix() for name in ("inference.json", FRAGMENT)]


class UnetppAlgo(BundleAlgo):
    """Auto3DSeg algorithm that trains monai-unetpp's 3D UNet++ bundle on one cross-validation fold.

    Auto3DSeg finds it as ``unetpp/scripts/algo.py`` in the folder of :func:`monai_unetpp.auto3dseg.templates_path`.
    Training parameters (``AutoRunner.set_training_params``) take Auto3DSeg's names (``num_epochs``,
    ``num_epochs_per_validation``, ``learning_rate``, ``num_images_per_batch``, ...; see
    :data:`monai_unetpp.auto3dseg.AUTO3DSEG_NAMES`) or any config id of the bundle (``features``, ``resume``, ...).

    Examples::

        from monai.apps.auto3dseg import AutoRunner
        from monai_unetpp.auto3dseg import templates_path

        runner = AutoRunner(input="task.yaml", algos=["unetpp"], templates_path_or_url=templates_path())
        runner.set_training_params({"num_epochs": 300, "num_epochs_per_validation": 5})
        runner.run()
    """

    def fill_template_config(self, data_stats_filename: str, algo_path: str, **kwargs: Any) -> dict:
        """Write the fold's configs and datalist into ``algo_path`` (see :mod:`monai_unetpp.auto3dseg.generate`).

        Args:
            data_stats_filename: Auto3DSeg's ``datastats.yaml``.
            algo_path: the algorithm folder, a fresh copy of the template.
            kwargs: ``fold`` (default 0); ``fill_with_datastats=False`` reuses the decisions of an earlier
                generation (``self.fill_records``, as Auto3DSeg's hyper-parameter search does); other entries are
                training parameters or config ids written into the fragment.

        Returns:
            The record of what was written: the fragment's ids, the fold's datalist, the class names and modality.
        """
        options = {k: kwargs.pop(k) for k in _GENERATION_OPTIONS if k in kwargs}
        if options.get("gpu_customization"):
            logger.info("unetpp: gpu_customization is not used; the planner sizes patch and batch to the GPU memory.")
        if options.get("fill_with_datastats", True):
            record = self._plan(data_stats_filename, int(options.get("fold", 0)))
        elif self.fill_records:
            record = self.fill_records
        else:
            raise ValueError(
                f"fill_with_datastats=False for {algo_path}, but this algorithm has no earlier generation to reuse; "
                "generate it from the data statistics first."
            )
        return write_algorithm(algo_path, record, kwargs)

    def _plan(self, data_stats_filename: str, fold: int) -> dict:
        data_stats = read_config_file(data_stats_filename, "Auto3DSeg data statistics")
        data_src = read_config_file(self.data_list_file, "Auto3DSeg input config") if self.data_list_file else {}
        missing = [key for key in ("datalist", "dataroot") if key not in data_src]
        if missing:
            raise ValueError(
                f"the Auto3DSeg input config {self.data_list_file or '(none)'} lacks {missing}; AutoRunner's input "
                "needs 'modality', 'datalist' and 'dataroot'."
            )
        if data_src.get("sigmoid"):
            raise ValueError(
                f"{self.data_list_file} sets sigmoid: true (overlapping regions); the unetpp algorithm segments "
                "exclusive classes with softmax. Drop sigmoid, or leave unetpp out of algos."
            )
        modality = data_src.get("modality")
        fragment = bundle_fragment(data_stats, modality=modality)
        fragment["dataset_dir"] = str(Path(data_src["dataroot"]).expanduser().absolute())
        names = class_names(data_src, int(fragment.get("num_classes", 2)))
        return {
            FRAGMENT: fragment,
            DATALIST: fold_datalist(data_src["datalist"], data_src["dataroot"], fold),
            "class_names": names,
            "modality": modality,
            "fold": fold,
        }

    def _create_cmd(self, train_params: dict | None = None) -> tuple[str, str]:
        """Auto3DSeg's hook for the training command: ``scripts/train.py run`` on :func:`training_configs` (the
        multi-GPU config added for several devices or nodes), with ``train_params`` as ``--name=value``; the
        launcher (``torchrun``, ``bcprun``) is added by :meth:`_run_cmd`."""
        params = dict(train_params or {})
        reserved = RESERVED_NAMES.intersection(params)
        if reserved:
            raise ValueError(f"training parameters {sorted(reserved)} are set by the algorithm; leave them out.")
        nodes, devices = int(self.device_setting["NUM_NODES"]), int(self.device_setting["n_devices"])
        configs = training_configs(self.output_path, multi_gpu=nodes > 1 or devices > 1)
        args = "".join(f" --{k}={command_value(k, v)}" for k, v in {"config_file": configs, **params}.items())
        script = f"{Path(self.output_path, 'scripts', 'train.py').as_posix()} run{args}"
        # Auto3DSeg's default prefix is a bare "python", which need not be the interpreter that runs Auto3DSeg
        prefix = str(self.device_setting.get("CMD_PREFIX") or sys.executable)
        if nodes > 1:
            if self.device_setting["MN_START_METHOD"] != "bcprun":
                raise NotImplementedError(
                    f"MN_START_METHOD {self.device_setting['MN_START_METHOD']!r}: Auto3DSeg starts multi-node runs "
                    "with bcprun only; set it to 'bcprun' or launch scripts/train.py with your cluster's launcher."
                )
            return _prepare_cmd_bcprun(script, cmd_prefix=prefix), ""
        if devices > 1:
            return script, ""
        return _prepare_cmd_default(script, cmd_prefix=prefix), ""

    def _run_cmd(self, cmd: str, devices_info: str = "") -> subprocess.CompletedProcess:
        """Run the training command: ``torchrun`` through this interpreter (``python -m torch.distributed.run``)
        for several GPUs, bcprun for several nodes, else a plain process."""
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(self.device_setting["CUDA_VISIBLE_DEVICES"])}
        if int(self.device_setting["NUM_NODES"]) > 1:
            return _run_cmd_bcprun(cmd, n=self.device_setting["NUM_NODES"], p=self.device_setting["n_devices"])
        if int(self.device_setting["n_devices"]) > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1"]
            launcher.append(f"--nproc_per_node={self.device_setting['n_devices']}")
            return run_cmd([*launcher, *cmd.split()], run_cmd_verbose=True, env=env, check=True)
        return run_cmd(cmd.split(), run_cmd_verbose=True, env=env, check=True)

    def _ckpt_dir(self) -> Path:
        parser = ConfigParser()
        parser.read_config(training_configs(self.output_path))
        parser["bundle_root"] = self.output_path
        return Path(parser.get_parsed_content("ckpt_dir"))

    def get_score(self, *args: Any, **kwargs: Any) -> float:
        """The fold's best validation mean Dice: the score that ``models/model.pt`` records of itself
        (:func:`monai_unetpp.bundle.best_record`), so the ranking reads the score of the model that is on disk.

        Raises:
            FileNotFoundError: before the fold has validated once (Auto3DSeg then counts it as untrained).
            ValueError: for a ``model.pt`` without a score (not written by the bundle's training).
        """
        path = self._ckpt_dir() / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.output_path} has no trained model ({path} is missing): train it, with num_epochs at least "
                "num_epochs_per_validation so that it validates and saves its best model."
            )
        record = best_record(path)
        if record is None:
            raise ValueError(f"{path} records no validation score; retrain the fold with its scripts/train.py.")
        return float(record["metric"])

    def get_inferer(self, *args: Any, **kwargs: Any) -> Any:
        """The fold's ``InferClass`` (what its ``scripts/infer.py`` runs) on :func:`inference_configs`, built once per
        set of parameters: the ensemble asks for it once per image."""
        key = repr(sorted(kwargs.items()))
        cache = self.__dict__.setdefault("_inferers", {})
        if key not in cache:
            cache.clear()  # one network in memory at a time
            cache[key] = InferClass(inference_configs(self.output_path), *args, bundle_root=self.output_path, **kwargs)
        return cache[key]
