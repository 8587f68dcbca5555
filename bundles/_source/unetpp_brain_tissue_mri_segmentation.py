# Copyright (c) monai-unetpp contributors
# Licensed under the Apache License, Version 2.0 (the "License").
"""bundles/unetpp_brain_tissue_mri_segmentation: CSF, grey and white matter in skull-stripped T1 MRI, trained on
images synthesised from label maps of the MNI152 2009 template (``monai_unetpp.data.brain.tissue_synthesis``).

It differs from the generic bundle in its data (the dataset is written from nilearn's templates on first use; the
one training subject is drawn ``draws_per_epoch`` times per epoch), its preprocessing (percentile scaling; the
training case's per-class probability maps are resampled with it; inference keeps a copy of the input as loaded),
its augmentation (every training patch is an image generated from a random label map, SynthSeg-style, instead of
flips and a small affine) and its inference post-processing (no tissue outside the input's nonzero region).
"""

from bundle_template import Bundle

#: where the dataset is written and how many fixed variants it holds, in train.json and inference.json
MNI152 = {
    "resolution": 1,
    "dataset_dir": "$os.path.join(@bundle_root, 'data', 'mni152_tissue_' + str(@resolution) + 'mm')",
    # one validation and one test variant: each is a whole 1 mm volume, minutes of sliding window on a CPU
    "num_validation": 1,
    "num_test": 1,
}
DATASET = (
    "$monai_unetpp.data.prepare_dataset(@dataset_source, spatial_dims=@spatial_dims, num_classes=@num_classes, "
    "demo=False, in_channels=@in_channels"
)
#: the training case also has "probabilities"; other cases do not
KEYS = ["image", "label", "probabilities"]
PATCH_WITH_MARGIN = "$[s + @crop_margin for s in @patch_size]"
#: the input as loaded (its own grid), kept by inference for the mask of its post-processing; training skips it
INPUT_COPY = "original_image"

BUNDLE = Bundle(
    spatial_dims=3,
    num_classes=4,
    features=[8, 16, 32, 64, 128],
    network_ids={"norm": ["group", {"num_groups": 4}]},
    spacing="$[float(@resolution)] * 3",
    patch_size=[32, 32, 32],
    batch_size=1,
    num_samples=2,
    epochs=10,  # 500 iterations, those of the shipped model: about 40 minutes on two CPU cores
    learning_rate=0.003,
    num_workers=2,
    sw_batch_size=4,
    imports=["$import monai_unetpp.data.brain"],
    train_data_ids=MNI152,
    # false: the network's own labels, without the refinement with the scan's intensities
    inference_data_ids={**MNI152, "refine_with_intensities": True},
    data_components={
        "dataset_source": {
            "_target_": "monai_unetpp.data.brain.prepare_mni152_dataset",
            "_desc_": "writes the MNI152 tissue dataset (Decathlon layout) from nilearn's templates on first use",
            "dataset_dir": "@dataset_dir",
            "resolution": "@resolution",
            "num_validation": "@num_validation",
            "num_test": "@num_test",
        }
    },
    train_datalists=DATASET + ")",
    inference_datalists=DATASET + ", check=False, require='test')",
    intensity_transform={
        "_target_": "monai.transforms.ScaleIntensityRangePercentilesd",
        "_desc_": "0th-99.5th percentile of the whole image to [0, 1]; robust to the noise and bias of the variants",
        "keys": "image",
        "lower": 0,
        "upper": 99.5,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    },
    train_preprocessing_ids={"keep_input": False},
    inference_preprocessing_ids={"keep_input": True},
    deterministic_transforms=[
        {
            "_target_": "monai.transforms.LoadImaged",
            "_desc_": "probabilities: the per-class probability maps of a training case that has them (files listed "
            "background first), resampled with the image by the training variation",
            "keys": KEYS,
            "reader": "monai_unetpp.data.SimpleITKReader",
            "allow_missing_keys": True,
        },
        {"_target_": "monai.transforms.EnsureChannelFirstd", "keys": KEYS, "allow_missing_keys": True},
        {
            "_target_": "monai.transforms.CopyItemsd",
            "_desc_": f"{INPUT_COPY}: the image on its own grid, before reorientation and resampling, for the mask "
            "of the inference post-processing",
            "_disabled_": "$not monai_unetpp.bundle.to_bool(@keep_input, 'keep_input')",
            "keys": "image",
            "names": INPUT_COPY,
        },
        {"_target_": "monai.transforms.Orientationd", "keys": KEYS, "axcodes": "RAS", "allow_missing_keys": True},
        {
            "_target_": "monai.transforms.Spacingd",
            "keys": KEYS,
            "pixdim": "@spacing",
            "mode": ["bilinear", "nearest", "bilinear"],
            "allow_missing_keys": True,
        },
        "@intensity_transform",
        {"_target_": "monai.transforms.EnsureTyped", "keys": KEYS, "allow_missing_keys": True},
    ],
    train_ids={"crop_margin": 16, "draws_per_epoch": 50},
    random_transforms=[
        {
            "_target_": "monai.transforms.SpatialPadd",
            "keys": KEYS,
            "allow_missing_keys": True,
            "spatial_size": PATCH_WITH_MARGIN,
        },
        {
            "_target_": "monai.transforms.ClassesToIndicesd",
            "keys": "label",
            "num_classes": "@num_classes",
            "indices_postfix": "_cls_indices",
        },
        {
            "_target_": "monai.transforms.RandCropByLabelClassesd",
            "_desc_": "background, CSF, GM and WM equally often at the centre of a patch with crop_margin voxels to "
            "spare for the rotation; most background-centred patches are empty or hold a rim of brain, and teach "
            "the empty and border windows of inference",
            "keys": KEYS,
            "allow_missing_keys": True,
            "label_key": "label",
            "indices_key": "label_cls_indices",
            "spatial_size": PATCH_WITH_MARGIN,
            "num_classes": "@num_classes",
            "num_samples": "@num_samples",
            "warn": False,
        },
        {
            "_target_": "monai_unetpp.data.brain.tissue_synthesis",
            "_desc_": "on each patch, SynthSeg-style: deformation of the probability maps, a label map at random "
            "tissue levels, an image generated from it (random T1-ordered class intensities, blur and resolution, "
            "bias field, noise, zero outside the brain)",
            "keys": ["image", "label"],
            "spatial_size": "@patch_size",
        },
    ],
    train_datasets={
        "cache": {
            "_target_": "monai.data.CacheDataset",
            "data": "$@datalists['training']",
            "transform": "@train::preprocessing",
            "cache_rate": 1.0,
            "num_workers": 1,
        },
        "dataset": {
            "_target_": "torch.utils.data.ConcatDataset",
            "_desc_": "the one training subject drawn draws_per_epoch times per epoch, each draw a new random variant "
            "of which num_samples patches are cut",
            "datasets": "$[@train::cache] * @draws_per_epoch",
        },
    },
    validate_dataset={
        "_target_": "monai.data.CacheDataset",
        "_desc_": "fixed variants written once with their own seed: never one of the training draws",
        "data": "$@datalists['validation']",
        "transform": "@validate::preprocessing",
        "cache_rate": 1.0,
        "num_workers": 1,
    },
    validate_num_workers=0,
    # a 1 mm head is many windows: OpenVINO where installed, in bf16 where the CPU runs it, is the faster with its
    # conversion counted, at the same Dice (benchmarks/README.md)
    inference_runtime=("auto", "auto"),
    inference_probability_postprocessing=[
        {
            "_target_": "monai_unetpp.transforms.IntensityMixtureRefined",
            "_desc_": "the network's tissue probabilities as spatial priors of a Gaussian mixture of the scan's own "
            "intensities in its nonzero region, with a smooth bias field (unified segmentation, Ashburner and "
            "Friston 2005): the scan's contrast, which the network trained on synthetic images cannot know",
            "_disabled_": "$not monai_unetpp.bundle.to_bool(@refine_with_intensities, 'refine_with_intensities')",
            "keys": "pred",
            "image_key": INPUT_COPY,
            "prior_weight": 0.5,
            "prior_floor": 0.3,
            "bias_sigma_mm": 15.0,
        }
    ],
    inference_postprocessing=[
        {
            "_target_": "monai_unetpp.transforms.MaskOutsideInputd",
            "_desc_": "background wherever the input is zero farther than one voxel from its nonzero region (the "
            "brain of a skull-stripped scan), on the input's own grid, whatever the field of view",
            "keys": "pred",
            "source_key": INPUT_COPY,
            "margin": 1,
            "remove_source": True,
        }
    ],
    evaluate_ids={"validate::dataset::data": "$@datalists['test']"},  # the test variants, not the validation ones
)
