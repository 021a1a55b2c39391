"""The CLI zoo: bad configs, bad folders, damaged models and a full disk, each one stderr line.

Every case asserts the exit status (2 for usage/config errors, 1 for runtime failures), that
stderr is exactly one line naming the file and the problem, and that no traceback is shown;
``medvl --debug`` shows it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medvl.cli import app

runner = CliRunner()


def one_line_error(args: list[str], code: int) -> str:
    """Run ``medvl ARGS``; assert exit ``code`` and one stderr line without a traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("warning: MEDVL_SALT")]
    lines = [line.split("\r")[-1] for line in lines if "%|" not in line.split("\r")[-1]]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def saved_aligner(tmp_path_factory) -> Path:
    from medvl.models import create_aligner

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("aligner") / "model"
    create_aligner("tiny").save_pretrained(folder)
    return folder


CONFIG_CASES = {
    "yaml syntax": ("train:\n  lr: [1, 2\n", "line 3, column 1: expected ',' or ']'"),
    "tab": ("train:\n\tlr: 0.1\n", "YAML indents with spaces, not tabs"),
    "duplicate key": (
        "mode: lora\nmode: full\n",
        "line 2: key 'mode' given twice (first on line 1)",
    ),
    "nan": ("train:\n  lr: .nan\n", "train.lr: nan is not a finite number"),
    "inf": ("train:\n  max_grad_norm: .inf\n", "train.max_grad_norm: inf is not a finite number"),
    "empty": ("", "the config file is empty"),
    "not a mapping": ("- a\n- b\n", "top level must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_files_are_one_line_config_errors(tmp_path, case):
    text, expected = CONFIG_CASES[case]
    config = tmp_path / "job.yaml"
    config.write_text(text)
    line = one_line_error(["finetune", "-c", config], 2)
    assert line.startswith(f"config error: {config}: ") and expected in line


def test_binary_config_and_nan_override_are_config_errors(tmp_path):
    config = tmp_path / "weights.yaml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    line = one_line_error(["segment-finetune", "-c", config], 2)
    assert line == f"config error: {config}: not a YAML text file (binary content)"
    assert "train.lr: inf is not a finite number" in one_line_error(
        ["finetune", "train.lr=.inf"], 2
    )


def test_out_pointing_at_a_file_is_a_usage_error(tmp_path, saved_aligner):
    file = tmp_path / "taken.txt"
    file.write_text("x")
    expected = f"config error: --out {file}: is a file; give a folder to write into"
    assert one_line_error(["ingest", tmp_path, "--out", file], 2) == expected
    assert one_line_error(["data", "adapter", "csv", tmp_path, "--out", file], 2) == expected
    manifest = tmp_path / "studies.jsonl"
    manifest.write_text("")
    args = ["evaluate", "-m", saved_aligner, "-d", manifest, "-o", file]
    assert one_line_error(args, 2) == expected


def damaged(saved: Path, where: Path, how: str) -> Path:
    folder = where / how
    shutil.copytree(saved, folder)
    config = folder / "config.json"
    if how == "no aligner key":
        payload = json.loads(config.read_text())
        del payload["aligner"]
        config.write_text(json.dumps(payload))
    elif how == "list descriptor":
        config.write_text("[1, 2]")
    elif how == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "no tokenizer":
        shutil.rmtree(folder / "tokenizer")
    elif how == "binary descriptor":
        config.write_bytes(b"\xff\xfe\x00garbage")
    return folder


MODEL_CASES = {
    "no aligner key": "config.json: no 'aligner' entry; the saved MedVLAligner is incomplete",
    "list descriptor": "config.json: not a saved MedVLAligner descriptor (expected a JSON object)",
    "truncated weights": "the weights were changed or corrupted after saving, refusing to load",
    "no tokenizer": "tokenizer: missing from the saved aligner; the folder is incomplete",
    "binary descriptor": "config.json: not valid JSON",
}


@pytest.mark.parametrize("how", sorted(MODEL_CASES))
def test_damaged_model_folders_are_one_line_errors(tmp_path, saved_aligner, how):
    folder = damaged(saved_aligner, tmp_path, how)
    args = ["merge-lora", "--model", folder, "--adapter", tmp_path, "--out", tmp_path / "o"]
    line = one_line_error(args, 1)
    assert line.startswith(f"error: {folder}") and MODEL_CASES[how] in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("garbage", "adapter_config.json: not valid JSON"),
        ('{"peft_type": "LORA"}', "adapter_config.json: no 'target_modules' entry"),
    ],
)
def test_damaged_adapter_is_one_line_error(tmp_path, saved_aligner, text, expected):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(text)
    args = ["merge-lora", "--model", saved_aligner, "--adapter", adapter, "--out", tmp_path / "o"]
    line = one_line_error(args, 1)
    assert line.startswith(f"error: {adapter}") and expected in line


def test_debug_shows_the_traceback(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("mode: lora\nmode: full\n")
    result = runner.invoke(app, ["--debug", "finetune", "-c", str(config)])
    assert result.exit_code != 0
    assert "given twice" in str(result.exception)  # raised, not turned into one line


def test_disk_full_during_ingest_is_one_line_naming_the_folder(tmp_path, small_disk):
    from pydicom.data import get_testdata_file

    disk = small_disk(8 * 1024)
    if disk is None:
        pytest.skip("needs root to mount a tmpfs")
    source = tmp_path / "dicoms"
    source.mkdir()
    for i in range(40):
        shutil.copy(get_testdata_file("CT_small.dcm"), source / f"{i:03d}.dcm")
    line = one_line_error(["ingest", source, "--out", disk / "out", "workers=1"], 1)
    assert line.startswith(f"error: {disk / 'out'}: disk full while writing ")
    assert "needed" in line
    assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory) -> Path:
    """A tiny transformers CLIPModel directory (CLIP's BPE vocabulary from open_clip)."""
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out = tmp_path_factory.mktemp("hf_clip")
    with gzip.open(default_bpe()) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    units = list(bytes_to_unicode().values())
    vocab = [*units, *(u + "</w>" for u in units), *("".join(m.split()) for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
             "num_attention_heads": 2}  # fmt: skip
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(str(out))
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(str(out))
    return out


@pytest.mark.parametrize("how", ["truncated weights", "refused pickle"])
def test_damaged_transformers_directory_is_one_error_naming_it(tmp_path, hf_clip_dir, how):
    import os

    from medvl.models import create_aligner

    folder = tmp_path / "clip"
    shutil.copytree(hf_clip_dir, folder)
    weights = folder / "model.safetensors"
    marker = tmp_path / "code-ran"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:5000])
    else:

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        weights.unlink()
        torch.save({"w": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as caught:
        create_aligner(folder)
    message = str(caught.value)
    assert (
        message.startswith(f"{folder}: cannot be read as a hf_clip model (") and "\n" not in message
    )
    assert not marker.exists()
