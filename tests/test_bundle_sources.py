"""The bundles' configs are rendered from one source (bundles/_source by scripts/render_bundles.py, the config
fragments from configs/), committed in the model zoo's JSON format, and every bundle folder runs on its own, wherever
it is copied: every command of its README included."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import fire.parser
import pytest
import yaml
from conftest import BUNDLES, REPO
from monai.bundle import ConfigParser

from monai_unetpp.data import make_demo_dataset

ALL_BUNDLES = sorted(path.parent.parent for path in BUNDLES.glob("*/configs/metadata.json"))
#: outputs of local runs (ignored by git): not part of a bundle
OUTPUTS = {"data", "models", "eval", "outputs", "runs"}
#: arguments of the `python -m monai.bundle` commands that name files: read ones (they must be in the bundle) and
#: written ones (they must stay inside it)
READ_FILES = ("config_file", "meta_file", "logging_file", "args_file")
WRITTEN_FILES = ("ckpt_file", "filepath")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_renderer():
    return load_script("render_bundles")


checker = load_script("check_bundles")  # the model zoo's checks: one implementation of its JSON format


def bundle_files(bundle: Path, suffix: str) -> list[Path]:
    return sorted(
        p for p in bundle.rglob(f"*{suffix}") if p.is_file() and not OUTPUTS & set(p.relative_to(bundle).parts[:1])
    )


def test_rendered_configs_equal_the_committed_ones():
    renderer = load_renderer()
    files = renderer.render(renderer.SOURCE, renderer.BUNDLES)
    assert {path.parent.parent for path in files} == set(ALL_BUNDLES), "a bundle without a source, or the reverse"
    changed = renderer.differences(files, renderer.BUNDLES)
    assert not changed, (
        "these files differ from their rendering; edit bundles/_source, run `python scripts/render_bundles.py` and "
        f"commit the result: {[str(p.relative_to(REPO)) for p in changed]}"
    )


def test_check_lists_the_files_that_differ_and_render_rewrites_them(tmp_path, monkeypatch, capsys):
    renderer = load_renderer()
    for bundle in ALL_BUNDLES:
        shutil.copytree(bundle / "configs", tmp_path / bundle.name / "configs")
    monkeypatch.setattr(renderer, "BUNDLES", tmp_path)
    assert renderer.main(["--check"]) == 0

    edited = tmp_path / "unetpp_2d_segmentation" / "configs" / "train.json"
    edited.write_text(edited.read_text().replace('"epochs": 30', '"epochs": 5'))
    (tmp_path / "unetpp_3d_segmentation" / "configs" / "inference.json").unlink()
    (tmp_path / "unetpp_3d_segmentation" / "configs" / "extra.json").write_text("{}\n")
    capsys.readouterr()
    assert renderer.main(["--check", "--diff"]) == 1
    out = capsys.readouterr().out
    assert f"{edited}: differs from its rendering" in out and '+    "epochs": 30,' in out
    assert "unetpp_3d_segmentation/configs/inference.json: differs" in out
    assert "unetpp_3d_segmentation/configs/extra.json: stale" in out
    assert "train.json" not in out.replace(str(edited), "")  # the other bundles' files are not listed

    assert renderer.main([]) == 0  # writes the two files, leaves the stale one alone
    assert '"epochs": 30' in edited.read_text()
    (tmp_path / "unetpp_3d_segmentation" / "configs" / "extra.json").unlink()
    assert renderer.main(["--check"]) == 0


def test_the_fragments_a_bundle_lists_are_copies_of_configs_and_follow_their_edits(tmp_path, monkeypatch, capsys):
    renderer = load_renderer()
    _, sources = renderer.load_source(renderer.SOURCE)
    fragments_3d = ["large_3d.yaml", "ct.yaml", "mri.yaml", "fast_inference.yaml"]
    assert sources["unetpp_3d_segmentation"].fragments == fragments_3d
    assert sources["unetpp_2d_segmentation"].fragments == ["large_2d.yaml", "paper_2d.yaml", "fast_inference.yaml"]
    for name, source in sources.items():
        for fragment in source.fragments:
            copy = BUNDLES / name / "configs" / fragment
            lines = copy.read_text(encoding="utf-8").splitlines(True)
            assert lines[0] == renderer.fragment_header(fragment) and f"configs/{fragment}" in lines[0]
            assert "".join(lines[1:]) == (REPO / "configs" / fragment).read_text(encoding="utf-8")
            assert yaml.safe_load(copy.read_text()) == yaml.safe_load((REPO / "configs" / fragment).read_text())

    # an edit of configs/ct.yaml makes the 3D bundle's copy stale, and rendering rewrites it
    fragments = tmp_path / "fragments"
    shutil.copytree(REPO / "configs", fragments)
    for bundle in ALL_BUNDLES:
        shutil.copytree(bundle / "configs", tmp_path / "bundles" / bundle.name / "configs")
    monkeypatch.setattr(renderer, "BUNDLES", tmp_path / "bundles")
    monkeypatch.setattr(renderer, "FRAGMENTS", fragments)
    assert renderer.main(["--check"]) == 0
    (fragments / "ct.yaml").write_text((fragments / "ct.yaml").read_text().replace("a_min: -175.0", "a_min: -200.0"))
    capsys.readouterr()
    assert renderer.main(["--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("unetpp_3d_segmentation/configs/ct.yaml: differs from its rendering") and len(out) == 2
    assert renderer.main([]) == 0
    assert "a_min: -200.0" in (tmp_path / "bundles" / "unetpp_3d_segmentation" / "configs" / "ct.yaml").read_text()
    # a fragment that configs/ does not have stops the rendering, naming it
    (fragments / "ct.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="unetpp_3d_segmentation: fragment ct.yaml"):
        renderer.main(["--check"])


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_every_json_file_is_in_the_model_zoo_format(bundle):
    # what the model zoo's pre-commit hook `pretty-format-json --autofix --no-sort-keys --indent=4` (pre-commit-hooks)
    # does (scripts/check_bundles.py, the json_format check): load keeping the key order, dump with indent=4 and its
    # default ensure_ascii=True, add one newline; and LF line endings
    files = bundle_files(bundle, ".json")
    assert bundle / "configs" / "metadata.json" in files
    for path in files:
        assert checker.json_format_problem(path) is None, path.relative_to(REPO)


def test_the_json_format_check_finds_what_pretty_format_json_would_change(tmp_path):
    config = {"b": 1, "a": ["x", "\u00e9"]}
    path = tmp_path / "config.json"
    path.write_text(checker.format_json(config))
    assert checker.json_format_problem(path) is None and '"\\u00e9"' in path.read_text()  # ensure_ascii
    for text in (
        json.dumps(config, indent=2) + "\n",
        json.dumps(config, indent=4),
        checker.format_json(config) + "\n",
        json.dumps(config, indent=4, ensure_ascii=False) + "\n",
        '{"a": 1, "a": 2}\n',
    ):
        path.write_text(text)
        assert "pretty-format-json" in checker.json_format_problem(path), text
    path.write_bytes(checker.format_json(config).replace("\n", "\r\n").encode())
    assert checker.json_format_problem(path) == "CR line endings"
    path.write_text("{")
    assert checker.json_format_problem(path).startswith("not JSON")


def strings(config) -> list[str]:
    """Every id and value string of a config that is read at run time (descriptions are not)."""
    if isinstance(config, dict):
        return [s for k, v in config.items() if k != "_desc_" for s in (k, *strings(v))]
    if isinstance(config, list):
        return [s for v in config for s in strings(v)]
    return [config] if isinstance(config, str) else []


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_configs_refer_to_nothing_outside_the_bundle(bundle):
    for path in bundle_files(bundle, ".json"):
        if path.parent.name != "configs" or path.name == "metadata.json":
            continue
        for text in strings(json.loads(path.read_text())):
            for outside in ("../", "..\\", "bundles/", "_source/", "configs/"):  # paths beyond bundle_root
                assert outside not in text, f"{path.name}: {text}"
            # macros (%id) and references (@id) within the config; a `%file.json::id` macro would read another file
            assert not (text.startswith("%") and ("." in text or "/" in text)), f"{path.name}: {text}"


def strip_comment(line: str) -> str:
    """A shell line without its comment: from a ``#`` outside quotes that starts the line or follows whitespace."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def readme_commands(bundle: Path) -> list[str]:
    """Every ``python -m monai.bundle`` command that the bundle's README shows: the lines of its shell blocks
    (continuation lines joined, comments dropped) and its inline code."""
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, re.S):
        lines += [strip_comment(line) for line in re.sub(r"\\\n", " ", block).splitlines()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`]+)`", prose)
    return [" ".join(line.split()) for line in lines if re.search(r"-m monai\.bundle\b", line)]


def parse_command(command: str) -> tuple[str, list, dict]:
    """The ``monai.bundle`` function a command calls, its positional and its named arguments, with the values as
    ``fire`` (which runs ``python -m monai.bundle``) parses them."""
    words = shlex.split(command)
    start = words.index("monai.bundle")
    assert words[start - 1] == "-m", command
    name, rest = words[start + 1], words[start + 2 :]
    positional, named = [], {}
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("--"):
            key, equals, value = word[2:].partition("=")
            if not equals:
                has_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
                value, i = (rest[i + 1], i + 1) if has_value else ("True", i)
            named[key] = fire.parser.DefaultParseValue(value)
        else:
            positional.append(fire.parser.DefaultParseValue(word))
        i += 1
    return name, positional, named


def as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def check_command(bundle: Path, command: str) -> None:
    """That ``command``, run from the bundle folder, calls a ``python -m monai.bundle`` function with arguments it
    takes, reads only files of the bundle, writes only inside it, and overrides only ids of its configs, on which
    the network still builds."""
    name, positional, named = parse_command(command)
    main = importlib.import_module("monai.bundle.__main__")  # the functions `python -m monai.bundle` offers
    assert callable(getattr(main, name, None)), f"{command}: monai.bundle has no command {name}"
    signature = inspect.signature(getattr(main, name))
    parameters = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= len(parameters), command
    args = {**dict(zip(parameters, positional, strict=False)), **named}
    overrides = {key: value for key, value in args.items() if key not in signature.parameters}
    takes_overrides = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    assert takes_overrides or not overrides, f"{command}: {name} takes no {sorted(overrides)}"

    root = bundle.resolve()
    for key in (*READ_FILES, *WRITTEN_FILES):
        for value in as_list(args.get(key)):
            path = (bundle / value).resolve()
            assert path.is_relative_to(root), f"{command}: --{key} {value} is outside the bundle"
            assert key in WRITTEN_FILES or path.is_file(), f"{command}: --{key} {value} is not in the bundle"
    configs = as_list(args.get("config_file"))
    if not configs:
        return
    parser = ConfigParser()
    parser.read_config([str(bundle / config) for config in configs])
    parser.read_meta(str(bundle / args.get("meta_file", "configs/metadata.json")))
    for key, value in overrides.items():
        assert key in parser, f"{command}: --{key} is no id of {configs}"
        parser[key] = value
    net_id = args.get("net_id", "network_def")
    assert net_id in parser, f"{command}: no {net_id} in {configs}"
    parser.get_parsed_content(net_id)


def copy_bundle(bundle: Path, target: Path) -> Path:
    """A copy of the files the bundle ships (as the model zoo's checks see them), outside the repository."""
    copy = target / bundle.name
    for name in checker.shipped_files(bundle):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle / name, copy / name)
    return copy


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_every_readme_command_uses_only_the_bundle_and_parses(bundle, tmp_path):
    # from a copy of the bundle outside the repository, as a zipped bundle is used
    copy = copy_bundle(bundle, tmp_path)
    commands = readme_commands(copy)
    assert len(commands) >= 6, commands
    for command in commands:
        check_command(copy, command)
    # every fragment the bundle ships is layered by one of its commands (the others by none)
    shipped = {p.name for p in (copy / "configs").glob("*.yaml")}
    used = {Path(c).name for command in commands for c in as_list(parse_command(command)[2].get("config_file"))}
    assert shipped <= used, shipped - used


@pytest.mark.parametrize(
    "command, message",
    [
        ("python -m monai.bundle run --config_file \"['configs/train.json','../../configs/ct.yaml']\"", "outside"),
        ("python -m monai.bundle run --config_file /work/configs/train.json", "outside"),
        ("python -m monai.bundle run --config_file configs/ct.yaml", "not in the bundle"),
        ("python -m monai.bundle run --config_file configs/inference.json --inference_mod mean", "no id"),
        ("python -m monai.bundle ckpt_export network_def --filepath ../model.ts", "outside"),
        ("python -m monai.bundle download_large_files --bundle_path . --large_file x.yml", "takes no"),
        ("python -m monai.bundle serve --config_file configs/inference.json", "no command"),
        ("python -m monai.bundle run --config_file configs/inference.json --num_classes x", "UNetPlusPlus"),
    ],
)
def test_the_command_check_finds_what_a_copy_of_the_bundle_cannot_run(command, message, tmp_path):
    copy = copy_bundle(BUNDLES / "unetpp_2d_segmentation", tmp_path)
    with pytest.raises(Exception, match=message):  # noqa: B017 - an AssertionError, or the network's own error
        check_command(copy, command)


def test_readme_commands_are_read_as_the_shell_reads_them(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text(
        "Run `python -m monai.bundle run --config_file configs/train.json\n--epochs 2` or\n\n```bash\n"
        "# python -m monai.bundle run --config_file commented.json\n"
        "torchrun --nproc_per_node=2 -m monai.bundle run \\\n    --config_file configs/train.json  # it's a comment\n"
        "python -m monai.bundle run --config_file configs/inference.json --dataset#data \"[{'image': 'a#b'}]\"\n"
        "tensorboard --logdir runs\n```\n"
    )
    assert readme_commands(tmp_path) == [
        "torchrun --nproc_per_node=2 -m monai.bundle run --config_file configs/train.json",
        "python -m monai.bundle run --config_file configs/inference.json --dataset#data \"[{'image': 'a#b'}]\"",
        "python -m monai.bundle run --config_file configs/train.json --epochs 2",
    ]
    assert parse_command(readme_commands(tmp_path)[1]) == (
        "run",
        [],
        {"config_file": "configs/inference.json", "dataset#data": [{"image": "a#b"}]},
    )


INDEX_INSTALL = re.compile(r"pip install\s+[\"']?monai[-_]unetpp\b")


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_readme_says_how_to_install_monai_unetpp_without_promising_an_index(bundle):
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert not INDEX_INSTALL.search(text), INDEX_INSTALL.search(text).group(0)  # it is on no package index
    assert "not on a package index" in text
    assert re.search(r"pip install -e \"?\.(\[brain\])?\"?", text)  # from the source
    assert "pip wheel . --no-deps -w dist" in text and "pip install dist/monai_unetpp-*.whl" in text  # or its wheel
    if "brain" in bundle.name:
        assert 'pip install -e ".[brain]"' in text and "pip install dist/monai_unetpp-*.whl nilearn" in text
    metadata = (bundle / "configs" / "metadata.json").read_text(encoding="utf-8")
    assert not INDEX_INSTALL.search(metadata)
    assert "monai-unetpp" in json.loads(metadata)["required_packages_version"]


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda b: b.name)
def test_readme_links_and_paths_stay_inside_the_bundle(bundle):
    text = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (bundle / "docs" / target.split("#")[0]).resolve()
        assert path.is_relative_to(bundle.resolve()) and path.is_file(), target
    assert "../" not in re.sub(r"\]\([^)\s]+\)", "", text), "a path that leaves the bundle"


def test_a_zipped_bundle_trains_and_infers_elsewhere_with_its_readme_commands(tmp_path):
    # zip the 2D bundle (the fastest), unzip it into a folder of its own, and run the commands of its README that
    # layer the paper's fragment (configs/paper_2d.yaml, shipped in the bundle) as a user would, on tiny settings and
    # with the flags as strings: --progress_bar false and --save_montages false must turn the bar and the montages off
    archive = tmp_path / "bundle.zip"
    source = BUNDLES / "unetpp_2d_segmentation"
    with zipfile.ZipFile(archive, "w") as z:
        for name in checker.shipped_files(source):
            z.write(source / name, f"{source.name}/{name}")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "elsewhere")
    bundle = tmp_path / "elsewhere" / "unetpp_2d_segmentation"
    make_demo_dataset(bundle / "data", spatial_dims=2, num_cases=3, num_test=1, shape=(32, 32))
    tiny = ["--features", "[4, 8, 16]", "--patch_size", "[16, 16]", "--num_workers", "0", "--progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    commands = readme_commands(bundle)
    (train,) = [c for c in commands if "['configs/train.json','configs/paper_2d.yaml']" in c]
    (infer,) = [c for c in commands if "['configs/inference.json','configs/paper_2d.yaml']" in c]

    def run(command: str, *args: str, settings: list[str] = tiny) -> str:
        words = shlex.split(command)
        assert words[:3] == ["python", "-m", "monai.bundle"], command
        result = subprocess.run(
            [sys.executable, *words[1:], *settings, *args],
            cwd=bundle,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    # the shipped model segments at once, with the README's plain inference command and nothing else
    shipped = (bundle / "models" / "model.pt").read_bytes()
    (plain,) = [c for c in commands if c == "python -m monai.bundle run --config_file configs/inference.json"]
    run(plain, settings=["--save_montages", "false"])
    assert len(list((bundle / "eval").glob("*_seg.nii.gz"))) == 1
    shutil.rmtree(bundle / "eval")

    out = run(train, "--epochs", "1", "--val_interval", "1", "--batch_size", "1", "--num_samples", "1")
    assert (bundle / "models" / "model.pt").read_bytes() != shipped  # --overwrite true, as the README says
    assert "Epoch[1] Complete" in out and "loss=" not in out  # no progress bar ("Iteration: [1/2] ..., loss=2.91")
    assert "Not all config files are in" not in out  # configs/logging.conf and metadata.json are found beside them
    run(infer, "--save_montages", "false")  # the paper's network: loads the model.pt that training wrote
    written = sorted(p.name for p in (bundle / "eval").iterdir())
    assert len([n for n in written if n.endswith("_seg.nii.gz")]) == 1, written
    assert not [n for n in written if n.endswith(".png")], written  # no montage
