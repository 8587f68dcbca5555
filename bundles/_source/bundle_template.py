# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""The one template of the UNet++ bundles' configs.

Every bundle under ``bundles/`` is this template filled in with the :class:`Bundle` of a file beside it
(``unetpp_3d_segmentation.py`` for ``bundles/unetpp_3d_segmentation``, ...). ``python scripts/render_bundles.py``
writes the results into each bundle's ``configs/``, where they are committed, so that every bundle folder stays
self-contained. What all bundles share is written once, here; what a bundle changes is a field of its
:class:`Bundle`, whose default is the generic bundle (a Decathlon-style folder or datalist, else the synthetic demo
data; z-score intensities; flips, small affine and intensity augmentations).

The functions return the configs as Python dictionaries in the order in which they are written: ids users set on the
command line first (``epochs``, ``learning_rate``, ``features``, ``patch_size``, ``dataset_dir``, ``demo_data``,
``resume``, ``overwrite``, ``progress_bar``, ``save_montages``, ``inference_mode``, ``inference_depth``,
``inference_backend``, ``inference_precision``, ...), then the components. Boolean ids go through ``monai_unetpp.bundle.to_bool`` wherever a config reads them, because the
command line passes ``--save_montages false`` as the (truthy) string ``"false"``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Bundle",
    "configs",
    "evaluate",
    "flag",
    "inference",
    "multi_gpu_evaluate",
    "multi_gpu_train",
    "train",
    "unless",
]

SEED = 0
#: where the generic bundles read their data; demo_data: write the synthetic demo set into a missing or empty
#: dataset_dir (the main job, python -m monai_unetpp.bundle.demo, sets it), else such a folder stops the run
DEMO_DATA = {"dataset_dir": "$os.path.join(@bundle_root, 'data')", "datalist": None, "demo_data": False}
IMAGE_AND_LABEL = ["image", "label"]
FROM_ENGINE_LOSS = "$monai.handlers.from_engine(['loss'], first=True)"
FROM_ENGINE_PRED_LABEL = "$monai.handlers.from_engine(['pred', 'label'])"


def flag(name: str) -> str:
    """The expression that reads the boolean id ``name``: ``true``/``false``, ``yes``/``no``, ``on``/``off``,
    ``1``/``0`` in any case, booleans; anything else stops the run with an error naming the id."""
    return f"$monai_unetpp.bundle.to_bool(@{name}, '{name}')"


def unless(name: str) -> str:
    """``_disabled_`` of a component that the boolean id ``name`` switches on."""
    return f"$not {flag(name)[1:]}"


def _generic_preprocessing_ids(inference: bool) -> dict[str, Any]:
    if inference:  # images only: inference runs on cases without labels
        return {"load_keys": ["image"], "resample_modes": ["bilinear"]}
    return {"load_keys": ["image", "label"], "resample_modes": ["bilinear", "nearest"]}


def _generic_deterministic_transforms(spatial_dims: int) -> list:
    return [
        {
            "_target_": "monai_unetpp.label.guards.LoadDatastoreImaged",
            "_desc_": "LoadImaged with SimpleITKReader; served by MONAI Label, it refuses files outside the server's "
            "datastore and answers a damaged file with an error naming it (HTTP 403/422)",
            "keys": "@load_keys",
            "reader": "monai_unetpp.data.SimpleITKReader",
        },
        {"_target_": "monai.transforms.EnsureChannelFirstd", "keys": "@load_keys"},
        {"_target_": "monai.transforms.Orientationd", "keys": "@load_keys", "axcodes": "RAS"[:spatial_dims]},
        {
            "_target_": "monai_unetpp.transforms.PathSafeSpacingd",
            "_desc_": "Spacingd that leaves MONAI Label's image_path entry alone; resample to `spacing` mm per voxel, "
            "0 on an axis keeps the image's own spacing",
            "keys": "@load_keys",
            "pixdim": "@spacing",
            "mode": "@resample_modes",
        },
        "@intensity_transform",
        {"_target_": "monai.transforms.EnsureTyped", "keys": "@load_keys"},
    ]


def _generic_random_transforms(spatial_dims: int) -> list:
    flips = [
        {"_target_": "monai.transforms.RandFlipd", "keys": IMAGE_AND_LABEL, "prob": 0.5, "spatial_axis": axis}
        for axis in range(spatial_dims)
    ]
    return [
        {"_target_": "monai.transforms.SpatialPadd", "keys": IMAGE_AND_LABEL, "spatial_size": "@patch_size"},
        {
            "_target_": "monai.transforms.ClassesToIndicesd",
            "keys": "label",
            "num_classes": "@num_classes",
            "indices_postfix": "_cls_indices",
        },
        {
            "_target_": "monai.transforms.RandCropByLabelClassesd",
            "_desc_": "patches centred on each class in the shares of class_ratios (a plan of python -m "
            "monai_unetpp.plan sets them); null: every class equally often, so that small structures are seen",
            "keys": IMAGE_AND_LABEL,
            "label_key": "label",
            "indices_key": "label_cls_indices",
            "spatial_size": "@patch_size",
            "ratios": "@class_ratios",
            "num_classes": "@num_classes",
            "num_samples": "@num_samples",
            "warn": False,
        },
        {
            "_target_": "monai.transforms.RandAffined",
            "_desc_": "rotation up to 15 degrees and scaling by up to 10 % per axis, on 20 % of the patches",
            "keys": IMAGE_AND_LABEL,
            "prob": 0.2,
            "rotate_range": [0.26] * (3 if spatial_dims == 3 else 1),  # one angle in 2D, three in 3D
            "scale_range": [0.1] * spatial_dims,
            "mode": ["bilinear", "nearest"],
            "padding_mode": "zeros",
        },
        *flips,
        {
            "_target_": "monai.transforms.RandScaleIntensityd",
            "_desc_": "intensity x (1 + U(-0.1, 0.1)) on half of the patches",
            "keys": "image",
            "factors": 0.1,
            "prob": 0.5,
        },
        {
            "_target_": "monai.transforms.RandShiftIntensityd",
            "_desc_": "intensity + U(-0.1, 0.1) (in z-score units) on half of the patches",
            "keys": "image",
            "offsets": 0.1,
            "prob": 0.5,
        },
        {
            "_target_": "monai.transforms.RandGaussianNoised",
            "_desc_": "Gaussian noise of standard deviation 0.05 (z-score units) on 10 % of the patches",
            "keys": "image",
            "prob": 0.1,
            "std": 0.05,
        },
    ]


@dataclass
class Bundle:
    """What one bundle sets; every field with a default is that of the generic bundle.

    Fields that hold config fragments (``train_data_ids``, ``intensity_transform``, ``random_transforms``, ...) are
    written as they are: ids and components in the bundle config syntax, ``"@id"`` references and ``"$"``
    expressions included. Fragments left as None are the generic ones, built from ``spatial_dims``.
    """

    #: the network (``network_def`` is ``monai_unetpp.UNetPlusPlus`` with deep supervision), the voxel spacing in mm
    #: that images are resampled to (0 on an axis: keep the image's own; or an expression), the training patches
    spatial_dims: int
    num_classes: int
    features: list[int]
    spacing: list[float] | str
    patch_size: list[int]
    in_channels: int = 1
    #: further ``UNetPlusPlus`` arguments, each an id of its own placed after ``features`` (e.g. ``norm``; the
    #: generic bundles' ``strides`` and ``kernel_size``, which a plan of ``python -m monai_unetpp.plan`` sets)
    network_ids: dict[str, Any] = field(default_factory=dict)

    #: training
    batch_size: int = 2
    num_samples: int = 2
    epochs: int = 500
    learning_rate: float = 0.001
    num_workers: int = 4
    #: sliding-window inference (validation, evaluation and inference alike)
    sw_batch_size: int = 4
    sw_overlap: float = 0.25

    #: ``$import`` lines besides the template's
    imports: list[str] = field(default_factory=list)

    #: where the data come from: ids of train.json and of inference.json (the template adds ``seed`` to
    #: train.json), components they need (placed before ``datalists``), and the ``datalists`` expressions
    train_data_ids: dict[str, Any] = field(default_factory=lambda: {**DEMO_DATA, "val_fraction": 0.2})
    inference_data_ids: dict[str, Any] = field(default_factory=lambda: {**DEMO_DATA, "seed": SEED})
    data_components: dict[str, Any] = field(default_factory=dict)
    train_datalists: str = (
        "$monai_unetpp.data.prepare_dataset(@dataset_dir, spatial_dims=@spatial_dims, num_classes=@num_classes, "
        "datalist=@datalist, val_fraction=@val_fraction, seed=@seed, in_channels=@in_channels, "
        "demo=monai_unetpp.bundle.to_bool(@demo_data, 'demo_data'))"
    )
    #: inference needs a test case (``require='test'``): an empty test list stops the run instead of writing nothing
    inference_datalists: str = (
        "$monai_unetpp.data.prepare_dataset(@dataset_dir, spatial_dims=@spatial_dims, num_classes=@num_classes, "
        "datalist=@datalist, seed=@seed, check=False, demo=monai_unetpp.bundle.to_bool(@demo_data, 'demo_data'), "
        "require='test')"
    )

    #: preprocessing shared by training, validation and inference
    intensity_transform: dict[str, Any] = field(
        default_factory=lambda: {
            "_target_": "monai.transforms.NormalizeIntensityd",
            "_desc_": "z-score per image and channel; configs/ct.yaml and configs/mri.yaml replace it",
            "keys": "image",
            "channel_wise": True,
        }
    )
    #: ids the deterministic transforms read, per file (None: ``load_keys`` and ``resample_modes``)
    train_preprocessing_ids: dict[str, Any] | None = None
    inference_preprocessing_ids: dict[str, Any] | None = None
    deterministic_transforms: list | None = None

    #: training data: ids after ``num_workers``, ``train::random_transforms``, the components of ``train`` from
    #: which ``train::dataloader`` reads ``train::dataset``, and ``validate::dataset``; the generic random transforms
    #: read ``class_ratios`` (the shares of patches centred on each class, None: equal)
    train_ids: dict[str, Any] = field(default_factory=lambda: {"cache_rate": 1.0, "class_ratios": None})
    random_transforms: list | None = None
    train_datasets: dict[str, Any] = field(
        default_factory=lambda: {
            "dataset": {
                "_target_": "monai_unetpp.label.guards.CheckedCacheDataset",
                "_desc_": "CacheDataset of the (image, label) pairs that pass "
                "monai_unetpp.label.guards.check_training_pairs; MONAI Label sets `data` to its datastore's pairs, "
                "unchecked: a bad pair is left out with a warning naming its image id",
                "data": "$@datalists['training']",
                "transform": "@train::preprocessing",
                "num_classes": "@num_classes",
                "spatial_dims": "@spatial_dims",
                "cache_rate": "@cache_rate",
                "num_workers": "@num_workers",
            }
        }
    )
    validate_dataset: dict[str, Any] = field(
        default_factory=lambda: {
            "_target_": "monai_unetpp.label.guards.CheckedCacheDataset",
            "_desc_": "the validation pairs that pass the check, as train::dataset; with none (MONAI Label's split of "
            "one or two labelled images gives none) the training pairs, so that validation writes models/model.pt",
            "data": "$@datalists['validation']",
            "transform": "@validate::preprocessing",
            "num_classes": "@num_classes",
            "spatial_dims": "@spatial_dims",
            "split": "validation",
            "required": False,
            "fallback": "@train::dataset::data",
            "cache_rate": "@cache_rate",
            "num_workers": "@num_workers",
        }
    )
    validate_num_workers: int | str = "@num_workers"

    #: transforms of inference.json's postprocessing on the class probabilities in the image's own space, before
    #: the argmax (e.g. a refinement with the image's intensities)
    inference_probability_postprocessing: list = field(default_factory=list)
    #: transforms of inference.json's postprocessing on the class-index map, after the argmax in the image's own
    #: space and before it is cast and saved (e.g. a mask that the bundle's data call for)
    inference_postprocessing: list = field(default_factory=list)

    #: inference.json's ``inference_backend`` and ``inference_precision``, chosen by measuring the bundle's own
    #: inference (benchmarks/README.md): PyTorch fp32 where its images are small enough that an OpenVINO conversion
    #: costs more than it saves. train.json's validation always runs PyTorch fp32: its weights change at every
    #: validation, and each change would be a new conversion.
    inference_runtime: tuple[str, str] = ("torch", "fp32")

    #: ids that evaluate.json sets besides the template's (e.g. the list it evaluates)
    evaluate_ids: dict[str, Any] = field(default_factory=dict)

    #: config fragments of the repository's ``configs/`` that the bundle's README layers on its configs: the renderer
    #: copies them into the bundle's ``configs/``, so that a copy of the bundle has them (``configs/ct.yaml``, ...)
    fragments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.train_preprocessing_ids is None:
            self.train_preprocessing_ids = _generic_preprocessing_ids(inference=False)
        if self.inference_preprocessing_ids is None:
            self.inference_preprocessing_ids = _generic_preprocessing_ids(inference=True)
        if self.deterministic_transforms is None:
            self.deterministic_transforms = _generic_deterministic_transforms(self.spatial_dims)
        if self.random_transforms is None:
            self.random_transforms = _generic_random_transforms(self.spatial_dims)


# ---------------------------------------------------------------------------------------------------------------
# pieces of train.json and inference.json


def _imports(b: Bundle) -> list[str]:
    return [
        "$import os",
        "$import monai_unetpp",
        "$import monai_unetpp.bundle",
        "$import monai_unetpp.data",
        *b.imports,
        "$import monai_unetpp.visualize",
    ]


def _model_ids(b: Bundle) -> dict[str, Any]:
    """device, amp and the network's ids, the same in train.json and inference.json."""
    return {
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "amp": "$torch.device(@device).type == 'cuda'",
        "spatial_dims": b.spatial_dims,
        "in_channels": b.in_channels,
        "num_classes": b.num_classes,
        "features": b.features,
        **b.network_ids,
        "spacing": b.spacing,
    }


def _inference_ids(b: Bundle, inference: bool) -> dict[str, Any]:
    backend, precision = b.inference_runtime if inference else ("torch", "fp32")
    return {
        "sw_batch_size": b.sw_batch_size,
        "sw_overlap": b.sw_overlap,
        "inference_mode": "final",
        "inference_depth": None,
        "inference_backend": backend,
        "inference_precision": precision,
    }


def _network(b: Bundle) -> dict[str, Any]:
    return {
        "network_def": {
            "_target_": "monai_unetpp.UNetPlusPlus",
            "spatial_dims": "@spatial_dims",
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "features": "@features",
            **{name: f"@{name}" for name in b.network_ids},
            "deep_supervision": True,
        },
        "network": "$@network_def.to(@device)",
    }


def _preprocessing(b: Bundle, inference: bool) -> dict[str, Any]:
    return {
        **b.data_components,
        "datalists": b.inference_datalists if inference else b.train_datalists,
        "intensity_transform": b.intensity_transform,
        "deterministic_transforms": b.deterministic_transforms,
    }


def _sliding_window_inferer() -> dict[str, Any]:
    return {
        "_target_": "monai_unetpp.UNetPlusPlusInferer",
        "roi_size": "@patch_size",
        "sw_batch_size": "@sw_batch_size",
        "overlap": "@sw_overlap",
        "inference_mode": "@inference_mode",
        "inference_depth": "@inference_depth",
        "backend": "@inference_backend",
        "precision": "@inference_precision",
    }


def _softmax() -> dict[str, Any]:
    return {"_target_": "monai.transforms.Activationsd", "keys": "pred", "softmax": True}


def _one_hot_pred_and_label() -> dict[str, Any]:
    return {
        "_target_": "monai.transforms.AsDiscreted",
        "keys": ["pred", "label"],
        "argmax": [True, False],
        "to_onehot": "@num_classes",
    }


def _mean_dice() -> dict[str, Any]:
    return {
        "_target_": "monai.handlers.MeanDice",
        "include_background": False,
        "output_transform": FROM_ENGINE_PRED_LABEL,
    }


def _progress_bar(**kwargs: Any) -> dict[str, Any]:
    return {"_target_": "monai_unetpp.bundle.ProgressBar", "_disabled_": unless("progress_bar"), **kwargs}


def _checkpoint_loader() -> list[dict[str, Any]]:
    """The handlers that load models/model.pt into the network: a check of the file, then MONAI's loader."""
    return [
        {
            "_target_": "monai_unetpp.bundle.CheckpointCheck",
            "_desc_": "before the CheckpointLoader: a missing, empty or truncated models/model.pt, or one of another "
            "network than this config builds, stops the run with its name and the fix",
            "path": "$os.path.join(@ckpt_dir, 'model.pt')",
            "network": "@network",
        },
        {
            "_target_": "monai.handlers.CheckpointLoader",
            "load_path": "$os.path.join(@ckpt_dir, 'model.pt')",
            "load_dict": {"model": "@network"},
            "map_location": "@device",
        },
    ]


def _montages(desc: str, output_dir: str) -> dict[str, Any]:
    return {
        "_target_": "monai_unetpp.visualize.MontageHandler",
        "_desc_": desc,
        "_disabled_": unless("save_montages"),
        "output_dir": output_dir,
        "class_names": "@_meta_::network_data_format::outputs::pred::channel_def",
    }


# ---------------------------------------------------------------------------------------------------------------
# the files


def train(b: Bundle) -> dict[str, Any]:
    """configs/train.json: training with validation every ``val_interval`` epochs."""
    return {
        "imports": _imports(b),
        "bundle_root": ".",
        "ckpt_dir": "$os.path.join(@bundle_root, 'models')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "log_dir": "$os.path.join(@bundle_root, 'runs')",
        **b.train_data_ids,
        "seed": SEED,
        **_model_ids(b),
        **b.train_preprocessing_ids,
        "patch_size": b.patch_size,
        "batch_size": b.batch_size,
        "num_samples": b.num_samples,
        "epochs": b.epochs,
        "val_interval": "$min(5, @train::trainer::max_epochs)",
        "learning_rate": b.learning_rate,
        "num_workers": b.num_workers,
        **b.train_ids,
        **_inference_ids(b, inference=False),
        "resume": False,
        "overwrite": False,
        "progress_bar": True,
        **_network(b),
        "loss": {
            "_target_": "monai_unetpp.DeepSupervisionDiceCELoss",
            "_desc_": "softmax Dice + cross-entropy on every head, head weights 1, 1/2, 1/4, ... (final head first)",
            "weight_mode": "exp",
            "include_background": False,
            "batch": True,
        },
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "_desc_": "AdamW with a light weight decay of 1e-5",
            "params": "$@network.parameters()",
            "lr": "@learning_rate",
            "weight_decay": 1e-05,
        },
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_desc_": "cosine decay from learning_rate to 0 over max_epochs (also when a tool such as MONAI Label sets "
            "only train::trainer::max_epochs), stepped once per epoch; a resumed run with more epochs follows the "
            "cosine of the new length from the saved epoch, down to 0 at its end",
            "optimizer": "@optimizer",
            "T_max": "@train::trainer::max_epochs",
        },
        **_preprocessing(b, inference=False),
        "train": {
            "random_transforms": b.random_transforms,
            "preprocessing": {
                "_target_": "monai.transforms.Compose",
                "transforms": "$@deterministic_transforms + @train::random_transforms",
            },
            **b.train_datasets,
            "dataloader": {
                "_target_": "monai.data.DataLoader",
                "dataset": "@train::dataset",
                "batch_size": "@batch_size",
                "shuffle": True,
                "num_workers": "@num_workers",
            },
            "inferer": {"_target_": "monai.inferers.SimpleInferer"},
            "postprocessing": {
                "_target_": "monai.transforms.Compose",
                "transforms": [
                    {
                        "_target_": "monai_unetpp.SelectHeadd",
                        "_desc_": "training returns every deep-supervision head; metrics use the final one",
                        "keys": "pred",
                    },
                    _softmax(),
                    _one_hot_pred_and_label(),
                ],
            },
            "handlers": [
                {
                    "_target_": "monai_unetpp.bundle.CheckpointGuard",
                    "_desc_": "before the first epoch: checks that ckpt_dir can be written, holds models/training.lock "
                    "for the run (a second run into the folder stops, naming the PID of the first), refuses to replace "
                    "the model.pt or last.ckpt of an earlier run unless resume or overwrite is true, removes the "
                    "temporary files of interrupted saves",
                    "save_dir": "@ckpt_dir",
                    "resume": flag("resume"),
                    "overwrite": flag("overwrite"),
                },
                {
                    "_target_": "monai.handlers.LrScheduleHandler",
                    "lr_scheduler": "@lr_scheduler",
                    "print_lr": True,
                },
                {
                    "_target_": "monai.handlers.ValidationHandler",
                    "validator": "@validate::evaluator",
                    "epoch_level": True,
                    "interval": "@val_interval",
                },
                {
                    "_target_": "monai_unetpp.bundle.TrainingStateCheckpoint",
                    "_desc_": "models/last.ckpt after every epoch, loaded back when resume is true",
                    "save_dir": "@ckpt_dir",
                    "save_dict": {
                        "network": "@network",
                        "optimizer": "@optimizer",
                        "lr_scheduler": "@lr_scheduler",
                        "best_model": "@validate::checkpoint_saver",
                    },
                    "resume": flag("resume"),
                },
                {
                    "_target_": "monai_unetpp.visualize.CurvePlotHandler",
                    "_desc_": "runs/training_curves.png: loss and validation Dice, rewritten after every epoch and "
                    "validation",
                    "output_dir": "@log_dir",
                    "evaluator": "@validate::evaluator",
                },
                {
                    "_target_": "monai.handlers.StatsHandler",
                    "tag_name": "train_loss",
                    "iteration_log": False,
                    "output_transform": FROM_ENGINE_LOSS,
                },
                {
                    "_target_": "monai.handlers.TensorBoardStatsHandler",
                    "log_dir": "@log_dir",
                    "tag_name": "train_loss",
                    "output_transform": FROM_ENGINE_LOSS,
                },
                _progress_bar(output_keys="loss"),
            ],
            "key_metric": {"train_mean_dice": _mean_dice()},
            "trainer": {
                "_target_": "monai.engines.SupervisedTrainer",
                "max_epochs": "@epochs",
                "device": "@device",
                "train_data_loader": "@train::dataloader",
                "network": "@network",
                "loss_function": "@loss",
                "optimizer": "@optimizer",
                "inferer": "@train::inferer",
                "postprocessing": "@train::postprocessing",
                "key_train_metric": "@train::key_metric",
                "train_handlers": "@train::handlers",
                "amp": flag("amp"),
            },
        },
        "validate": {
            "preprocessing": {"_target_": "monai.transforms.Compose", "transforms": "%deterministic_transforms"},
            "dataset": b.validate_dataset,
            "dataloader": {
                "_target_": "monai.data.DataLoader",
                "dataset": "@validate::dataset",
                "batch_size": 1,
                "shuffle": False,
                "num_workers": b.validate_num_workers,
            },
            "inferer": _sliding_window_inferer(),
            "postprocessing": {
                "_target_": "monai.transforms.Compose",
                "transforms": [_softmax(), _one_hot_pred_and_label()],
            },
            "checkpoint_saver": {
                "_target_": "monai_unetpp.bundle.BestCheckpointSaver",
                "_desc_": "models/model.pt: the network state_dict of the best validation Dice, written atomically, "
                "with its Dice and epoch in the state_dict's _metadata (a resumed run compares against the file's)",
                "save_dir": "@ckpt_dir",
                "save_dict": {"model": "@network"},
                "filename": "model.pt",
            },
            "handlers": [
                {"_target_": "monai.handlers.StatsHandler", "iteration_log": False},
                {"_target_": "monai.handlers.TensorBoardStatsHandler", "log_dir": "@log_dir", "iteration_log": False},
                "@validate::checkpoint_saver",
            ],
            "key_metric": {"val_mean_dice": _mean_dice()},
            "evaluator": {
                "_target_": "monai.engines.SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@validate::dataloader",
                "network": "@network",
                "inferer": "@validate::inferer",
                "postprocessing": "@validate::postprocessing",
                "key_val_metric": "@validate::key_metric",
                "val_handlers": "@validate::handlers",
                "amp": flag("amp"),
            },
        },
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@train::trainer.run()"],
    }


def inference(b: Bundle) -> dict[str, Any]:
    """configs/inference.json: segmentations of the test list (or of ``dataset::data``), loaded alone (e.g. by MONAI
    Label), so it declares the network and preprocessing ids of train.json itself, from the same source."""
    return {
        "imports": _imports(b),
        "bundle_root": ".",
        "ckpt_dir": "$os.path.join(@bundle_root, 'models')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        **b.inference_data_ids,
        **_model_ids(b),
        **b.inference_preprocessing_ids,
        "patch_size": b.patch_size,
        "num_workers": b.num_workers,
        **_inference_ids(b, inference=True),
        "progress_bar": True,
        "save_montages": True,
        **_network(b),
        **_preprocessing(b, inference=True),
        "preprocessing": {"_target_": "monai.transforms.Compose", "transforms": "$@deterministic_transforms"},
        "dataset": {
            "_target_": "monai.data.Dataset",
            "_desc_": "the test list by default; override `dataset::data` with [{'image': path}, ...] for other images",
            "data": "$@datalists['test']",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "monai.data.DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": "@num_workers",
        },
        "inferer": _sliding_window_inferer(),
        "postprocessing": {
            "_target_": "monai.transforms.Compose",
            "transforms": [
                _softmax(),
                {
                    "_target_": "monai.transforms.Invertd",
                    "_desc_": "back to the image's own orientation, spacing and grid; probabilities are interpolated",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                *b.inference_probability_postprocessing,
                {"_target_": "monai.transforms.AsDiscreted", "keys": "pred", "argmax": True},
                *b.inference_postprocessing,
                {
                    "_target_": "monai.transforms.CastToTyped",
                    "_desc_": "class indices as uint8, the dtype viewers expect: MONAI Label drops SaveImaged and "
                    "writes the array as it is",
                    "keys": "pred",
                    "dtype": "$numpy.uint8",
                },
                {
                    "_target_": "monai.transforms.SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$numpy.uint8",
                    "separate_folder": False,
                    "resample": False,
                },
            ],
        },
        "handlers": [
            *_checkpoint_loader(),
            _montages(
                "eval/<case>_montage.png: axial, coronal and sagittal slices (one view in 2D) of the image, the label "
                "where the case has one, and the prediction",
                "@output_dir",
            ),
            {"_target_": "monai.handlers.StatsHandler", "iteration_log": False},
            _progress_bar(),
        ],
        "evaluator": {
            "_target_": "monai.engines.SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": flag("amp"),
        },
        "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', True)"],
        "run": ["$@evaluator.run()"],
    }


def evaluate(b: Bundle) -> dict[str, Any]:
    """configs/evaluate.json, layered on train.json: per-class Dice and HD95 in the images' own space, montages."""
    return {
        "save_montages": True,
        **b.evaluate_ids,
        "validate::dataset::cache_rate": 0,
        "validate::postprocessing": {
            "_target_": "monai.transforms.Compose",
            "transforms": [
                _softmax(),
                {
                    "_target_": "monai.transforms.Invertd",
                    "_desc_": "prediction and label back to the image's own grid: metrics in the original space",
                    "keys": ["pred", "label"],
                    "transform": "@validate::preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": [False, True],
                    "to_tensor": True,
                },
                _one_hot_pred_and_label(),
            ],
        },
        "validate::additional_metrics": {
            "val_hd95": {
                "_target_": "monai.handlers.HausdorffDistance",
                "_desc_": "95th percentile Hausdorff distance in voxels of the original image",
                "include_background": False,
                "percentile": 95,
                "output_transform": FROM_ENGINE_PRED_LABEL,
            }
        },
        "validate::evaluator::additional_metrics": "@validate::additional_metrics",
        "validate::handlers": [
            *_checkpoint_loader(),
            _montages(
                "eval/montages/<case>_montage.png: image, label and prediction of every evaluated case",
                "$os.path.join(@output_dir, 'montages')",
            ),
            {"_target_": "monai.handlers.StatsHandler", "iteration_log": False},
            {
                "_target_": "monai_unetpp.bundle.ClassMetricsReport",
                "save_dir": "@output_dir",
                "metric_names": ["val_mean_dice", "val_hd95"],
                "class_names": "@_meta_::network_data_format::outputs::pred::channel_def",
            },
            _progress_bar(),
        ],
        "run": ["$@validate::evaluator.run()"],
    }


_DISTRIBUTED = {
    "+imports": ["$import torch.distributed as dist"],
    "backend": "$'nccl' if torch.cuda.is_available() else 'gloo'",
    "device": "$torch.device(f\"cuda:{os.environ['LOCAL_RANK']}\" if torch.cuda.is_available() else 'cpu')",
    "network": {
        "_target_": "torch.nn.parallel.DistributedDataParallel",
        "module": "$@network_def.to(@device)",
        "device_ids": "$[@device] if torch.cuda.is_available() else None",
    },
}
_INIT_PROCESS_GROUP = [
    "$dist.is_initialized() or dist.init_process_group(backend=@backend)",
    "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
]
_QUIET_RANKS = "logger.setLevel(logging.WARNING if dist.get_rank() > 0 else logging.INFO)"
_FINALIZE = ["$dist.is_initialized() and dist.barrier()", "$dist.is_initialized() and dist.destroy_process_group()"]


def _distributed_sampler(section: str, train: bool) -> dict[str, Any]:
    if not train:  # each validation image counted once in the processes' mean metric
        return {"_target_": "monai_unetpp.bundle.validation_sampler", "dataset": f"@{section}::dataset"}
    return {
        "_target_": "monai.data.DistributedSampler",
        "dataset": f"@{section}::dataset",
        "even_divisible": True,
        "shuffle": True,
    }


def multi_gpu_train(b: Bundle) -> dict[str, Any]:
    """configs/multi_gpu_train.json, layered on train.json for ``torchrun``: one process per GPU."""
    return {
        **copy.deepcopy(_DISTRIBUTED),
        "train::sampler": _distributed_sampler("train", train=True),
        "train::dataloader::sampler": "@train::sampler",
        "train::dataloader::shuffle": False,
        "train::trainer::train_handlers": "$@train::handlers if dist.get_rank() == 0 else [h for h in @train::handlers "
        "if not isinstance(h, (monai.handlers.StatsHandler, monai.handlers.TensorBoardStatsHandler))]",
        "validate::sampler": _distributed_sampler("validate", train=False),
        "validate::dataloader::sampler": "@validate::sampler",
        "validate::evaluator::val_handlers": "$@validate::handlers if dist.get_rank() == 0 else None",
        "initialize": [
            *_INIT_PROCESS_GROUP,
            "$monai.utils.set_determinism(seed=@seed)",
            "$import logging",
            f"$@train::trainer.{_QUIET_RANKS}",
            f"$@validate::evaluator.{_QUIET_RANKS}",
        ],
        "run": ["$@train::trainer.run()"],
        "finalize": list(_FINALIZE),
    }


def multi_gpu_evaluate(b: Bundle) -> dict[str, Any]:
    """configs/multi_gpu_evaluate.json, layered on train.json and evaluate.json for ``torchrun``."""
    return {
        **copy.deepcopy(_DISTRIBUTED),
        "validate::sampler": _distributed_sampler("validate", train=False),
        "validate::dataloader::sampler": "@validate::sampler",
        "validate::evaluator::val_handlers": "$@validate::handlers if dist.get_rank() == 0 else [h for h in "
        "@validate::handlers if isinstance(h, (monai_unetpp.bundle.CheckpointCheck, monai.handlers.CheckpointLoader, "
        "monai_unetpp.visualize.MontageHandler))]",
        "initialize": [*_INIT_PROCESS_GROUP, "$import logging", f"$@validate::evaluator.{_QUIET_RANKS}"],
        "run": ["$@validate::evaluator.run()"],
        "finalize": list(_FINALIZE),
    }


def configs(b: Bundle) -> dict[str, dict[str, Any]]:
    """Every rendered JSON config of the bundle ``b``, by file name (deep copies: fragments may be shared)."""
    files = {
        "train.json": train(b),
        "evaluate.json": evaluate(b),
        "inference.json": inference(b),
        "multi_gpu_train.json": multi_gpu_train(b),
        "multi_gpu_evaluate.json": multi_gpu_evaluate(b),
    }
    return copy.deepcopy(files)
