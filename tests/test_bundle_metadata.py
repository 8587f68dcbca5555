"""Bundle layout, metadata schema, component paths and command-line flags, without running anything.

That the configs of the bundles agree where they should is tests/test_bundle_sources.py's business: they are rendered
from one source.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from pydoc import locate

import pytest
from monai.bundle import ConfigParser
from monai.bundle.scripts import _get_fake_spatial_shape

from monai_unetpp import UNetPlusPlus, UNetPlusPlusInferer
from monai_unetpp.bundle import CheckpointGuard, ProgressBar, TrainingStateCheckpoint
from monai_unetpp.visualize import MontageHandler

REPO = Path(__file__).parents[1]
ALL_BUNDLES = sorted(path.parent.parent for path in (REPO / "bundles").glob("*/configs/metadata.json"))
SCHEMA = Path(__file__).parent / "bundle_schema" / "meta_schema_20240725.json"
CONFIGS = [
    "metadata.json",
    "train.json",
    "evaluate.json",
    "inference.json",
    "multi_gpu_train.json",
    "multi_gpu_evaluate.json",
    "logging.conf",
]
#: a 1-level network, so that parsing a handler that holds the network costs nothing
TINY = {"features": [4, 8]}


def load(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text())


def strings(config) -> list[str]:
    """Every string in a config, keys excluded."""
    if isinstance(config, dict):
        return [s for v in config.values() for s in strings(v)]
    if isinstance(config, list):
        return [s for v in config for s in strings(v)]
    return [config] if isinstance(config, str) else []


def targets(config) -> list[str]:
    if isinstance(config, dict):
        own = [config["_target_"]] if isinstance(config.get("_target_"), str) else []
        return own + [t for v in config.values() for t in targets(v)]
    if isinstance(config, list):
        return [t for v in config for t in targets(v)]
    return []


def test_bundles_are_found():
    assert [b.name for b in ALL_BUNDLES] == [
        "unetpp_2d_segmentation",
        "unetpp_3d_segmentation",
        "unetpp_brain_tissue_mri_segmentation",
    ]


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_model_zoo_layout(bundle):
    assert "segmentation" in bundle.name  # MONAI Label derives the task type from the folder name
    for name in CONFIGS:
        assert (bundle / "configs" / name).is_file(), name
    for name in ("docs/README.md", "docs/data_license.txt", "LICENSE"):
        assert (bundle / name).is_file(), name


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_metadata_validates_against_the_bundle_schema(bundle):
    jsonschema = pytest.importorskip("jsonschema")
    metadata = load(bundle, "metadata.json")
    assert metadata["schema"].rsplit("/", 1)[-1] == SCHEMA.name  # the schema shipped in tests/bundle_schema/
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert metadata["version"] in metadata["changelog"]
    assert list(metadata["changelog"])[0] == metadata["version"]  # newest first


def test_schema_check_rejects_incomplete_metadata():
    jsonschema = pytest.importorskip("jsonschema")
    metadata = load(ALL_BUNDLES[0], "metadata.json")
    del metadata["network_data_format"]
    with pytest.raises(jsonschema.ValidationError, match="network_data_format"):
        jsonschema.validate(metadata, json.loads(SCHEMA.read_text(encoding="utf-8")))


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_metadata_matches_the_network(bundle):
    metadata = load(bundle, "metadata.json")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, UNetPlusPlus) and net.deep_supervision
    image = metadata["network_data_format"]["inputs"]["image"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == net.in_channels
    assert pred["num_channels"] == net.out_channels == len(pred["channel_def"])
    assert len(image["spatial_shape"]) == net.spatial_dims
    for n in (1, 2, 5):  # every shape the metadata allows is a multiple of 2 ** depth that the network takes
        shape = _get_fake_spatial_shape(image["spatial_shape"], n=n)
        assert all(s % f == 0 for s, f in zip(shape, net.shape_factor(), strict=True))
        assert net.accepts_spatial_shape(shape)
    patch = parser.get_parsed_content("patch_size")
    assert all(s % f == 0 for s, f in zip(patch, net.shape_factor(), strict=True))


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
@pytest.mark.parametrize("max_epochs, interval", [(2, 2), (40, 5)])
def test_schedule_follows_max_epochs_as_tools_set_it(bundle, max_epochs, interval):
    # MONAI Label sets only train#trainer#max_epochs: validation (which writes model.pt) and the cosine schedule
    # must follow it, so that even a 2-epoch run validates and decays the learning rate
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["train::trainer::max_epochs"] = max_epochs
    parser.update(TINY)
    assert parser.get_parsed_content("val_interval") == interval
    assert parser.get_parsed_content("lr_scheduler").T_max == max_epochs


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_targets_are_full_dotted_paths_that_import(bundle):
    found = set()
    for path in sorted((bundle / "configs").glob("*.json")):
        config = json.loads(path.read_text())
        config.pop("changelog", None)  # history may name what was
        for text in strings(config):  # names the package has deprecated
            assert not re.search(r"monai_unetpp\.(brain\b|label\.(?!guards\.))", text), f"{path.name}: {text}"
        found.update(targets(config))
    for target in sorted(found):
        assert re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", target), f"not a full dotted path: {target}"
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            assert locate(target) is not None, f"{target} does not import"


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_the_inferer_takes_the_inference_ids(bundle):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({**TINY, "inference_mode": "mean", "inference_depth": 1, "sw_overlap": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no deprecated keyword arguments
        inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, UNetPlusPlusInferer)
    assert (inferer.inference_mode, inferer.inference_depth, inferer.overlap) == ("mean", 1, 0.5)


# --- boolean ids: the command line passes `--save_montages false` as the string "false" ---------------------------

#: each config set that users run, with the boolean ids declared in it
RUNS = {
    "train": ["train.json"],
    "evaluate": ["train.json", "evaluate.json"],
    "inference": ["inference.json"],
}


def parser_for(bundle: Path, run: str, tmp_path: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / name) for name in RUNS[run]])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.update({**TINY, "bundle_root": str(tmp_path), **overrides})
    return parser


def item_id(parser: ConfigParser, list_id: str, target: str) -> str:
    """The id of the one item of the list ``list_id`` whose ``_target_`` is ``target``."""
    (index,) = [i for i, item in enumerate(parser[list_id]) if isinstance(item, dict) and item["_target_"] == target]
    return f"{list_id}::{index}"


def root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_every_boolean_id_is_read_through_to_bool(bundle):
    configs = {name: load(bundle, name) for name in CONFIGS if name.endswith(".json") and name != "metadata.json"}
    declared = {"amp"} | {
        k for config in configs.values() for k, v in config.items() if isinstance(v, bool) and "::" not in k
    }
    assert {"resume", "overwrite", "progress_bar", "save_montages", "amp"} <= declared
    if "dataset_dir" in configs["train.json"] and "dataset_source" not in configs["train.json"]:
        assert "demo_data" in declared  # the generic bundles: demo data only when asked for
    for name, config in configs.items():
        for text in strings(config):
            for flag in declared:
                # every `@flag` must be the first argument of to_bool(@flag, 'flag'), never read raw
                raw = re.sub(rf"monai_unetpp\.bundle\.to_bool\(@{flag}, '{flag}'\)", "", text)
                assert not re.search(rf"@{flag}(?![\w:#])", raw), f"{name} reads {flag} without to_bool: {text}"


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
@pytest.mark.parametrize("run", ["evaluate", "inference"])
def test_save_montages_false_from_the_command_line_turns_the_montages_off(bundle, run, tmp_path):
    handlers = "validate::handlers" if run == "evaluate" else "handlers"
    for value, expected in (("false", False), ("No", False), ("0", False), ("true", True), ("ON", True)):
        parser = parser_for(bundle, run, tmp_path, save_montages=value)
        montages = parser.get_parsed_content(item_id(parser, handlers, "monai_unetpp.visualize.MontageHandler"))
        assert isinstance(montages, MontageHandler) if expected else montages is None, value
    # a disabled handler is left out of the list that the evaluator attaches
    parser = parser_for(bundle, run, tmp_path, save_montages="false")
    assert not any(isinstance(h, MontageHandler) for h in parser.get_parsed_content(handlers))


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
@pytest.mark.parametrize("run, handlers", [("train", "train::handlers"), ("inference", "handlers")])
def test_progress_bar_false_from_the_command_line_turns_the_bar_off(bundle, run, handlers, tmp_path):
    for value, expected in (("false", False), ("off", False), ("True", True), ("yes", True)):
        parser = parser_for(bundle, run, tmp_path, progress_bar=value)
        bar = parser.get_parsed_content(item_id(parser, handlers, "monai_unetpp.bundle.ProgressBar"))
        assert (isinstance(bar, ProgressBar) and bar.enabled) if expected else bar is None, value


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_resume_overwrite_and_amp_from_the_command_line(bundle, tmp_path):
    for value, expected in (("false", False), ("FALSE", False), ("true", True), ("1", True)):
        parser = parser_for(bundle, "train", tmp_path, resume=value, amp=value, overwrite=value)
        state_id = item_id(parser, "train::handlers", "monai_unetpp.bundle.TrainingStateCheckpoint")
        state = parser.get_parsed_content(state_id)
        assert isinstance(state, TrainingStateCheckpoint) and state.resume is expected, value
        guard = parser.get_parsed_content(item_id(parser, "train::handlers", "monai_unetpp.bundle.CheckpointGuard"))
        assert isinstance(guard, CheckpointGuard) and (guard.resume, guard.overwrite) == (expected, expected), value
        assert parser.get_parsed_content("train::trainer::amp") is expected
        assert parser.get_parsed_content("validate::evaluator::amp") is expected
    parser = parser_for(bundle, "inference", tmp_path, amp="false")
    assert parser.get_parsed_content("evaluator::amp") is False


FLAG_CASES = [
    ("train", "resume", ("train::handlers", "monai_unetpp.bundle.TrainingStateCheckpoint")),
    ("train", "overwrite", ("train::handlers", "monai_unetpp.bundle.CheckpointGuard")),
    ("train", "demo_data", "datalists"),
    ("inference", "demo_data", "datalists"),
    ("train", "progress_bar", ("train::handlers", "monai_unetpp.bundle.ProgressBar")),
    ("train", "amp", "train::trainer::amp"),
    ("evaluate", "save_montages", ("validate::handlers", "monai_unetpp.visualize.MontageHandler")),
    ("inference", "save_montages", ("handlers", "monai_unetpp.visualize.MontageHandler")),
    ("inference", "progress_bar", ("handlers", "monai_unetpp.bundle.ProgressBar")),
]
"""Where each config reads a boolean id: (run, id, the item that reads it)."""


@pytest.mark.parametrize(
    "bundle, run, flag, item",
    [
        pytest.param(b, run, flag, item, id=f"{b.name}-{run}-{flag}")
        for b in ALL_BUNDLES
        for run, flag, item in FLAG_CASES
        if flag in load(b, RUNS[run][-1])  # the brain bundle writes its own data: it has no demo_data
    ],
)
def test_a_flag_that_is_not_a_boolean_stops_with_its_name(bundle, run, flag, item, tmp_path):
    parser = parser_for(bundle, run, tmp_path, **{flag: "maybe"})
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content(item if isinstance(item, str) else item_id(parser, *item))
    cause = root_cause(raised.value)
    assert isinstance(cause, ValueError) and f"{flag} must be true or false, got 'maybe'" in str(cause)
