"""hub: one ChecksumError for every saved model, one atomic descriptor writer."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import medvl.models
from medvl.models import MedVLAligner
from medvl.models.hub import (
    ChecksumError,
    read_saved_json,
    save_state_atomic,
    sha256_file,
    sha256_tensors,
    verified_weights,
    write_descriptor,
)
from medvl.models.sam import SamConfig, SamModel, build_sam


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_one_checksum_error_everywhere() -> None:
    package = Path(medvl.models.__file__).parents[1]
    defined = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name == "ChecksumError"
    ]
    assert defined == ["models/hub.py"]
    assert medvl.models.ChecksumError is ChecksumError
    assert issubclass(ChecksumError, ValueError)


def test_hub_checksum_error_catches_a_tampered_aligner_and_sam(tiny_aligner, tmp_path) -> None:
    tiny_aligner.save_pretrained(tmp_path / "aligner")
    build_sam(SamConfig(variant="tiny", img_size=64)).save_pretrained(tmp_path / "sam")
    loaders = {"aligner": MedVLAligner.from_pretrained, "sam": SamModel.from_pretrained}
    for name, load in loaders.items():
        _flip_last_byte(tmp_path / name / "model.safetensors")
        with pytest.raises(ChecksumError, match="changed or corrupted after saving"):
            load(tmp_path / name)


def test_descriptor_is_written_whole_and_verified(tmp_path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    payload = {"format": "x", "weights_file": "w.safetensors", "weights_sha256": None}
    path = write_descriptor(tmp_path / "m", payload)
    assert json.loads(path.read_text()) == payload and path.name == "config.json"
    assert not list((tmp_path / "m").glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="weights file missing from the saved thing"):
        verified_weights(tmp_path / "m", payload, "thing")
    with pytest.raises(ChecksumError, match="records None"):
        verified_weights(tmp_path, payload, "thing")
    payload["weights_sha256"] = digest = sha256_file(tmp_path / "w.safetensors")
    assert verified_weights(tmp_path, payload, "thing") == (tmp_path / "w.safetensors", digest)


def test_weights_sha256_names_the_tensors_not_the_file(tmp_path) -> None:
    import torch
    from safetensors.torch import save_file

    net = torch.nn.Linear(3, 2)
    first = save_state_atomic(net, tmp_path / "a.safetensors", "medvl-x")
    again = save_state_atomic(net, tmp_path / "b.safetensors", "another producer")
    state = {k: v.detach() for k, v in reversed(net.state_dict().items())}
    save_file(state, str(tmp_path / "c.safetensors"), metadata={"note": "re-saved"})
    assert first == again == sha256_tensors(tmp_path / "c.safetensors")
    assert sha256_file(tmp_path / "a.safetensors") != sha256_file(tmp_path / "c.safetensors")
    with torch.no_grad():
        net.bias[0] += 1e-6
    assert save_state_atomic(net, tmp_path / "d.safetensors", "medvl-x") != first
    payload = {"weights_file": "a.safetensors", "weights_sha256": first}
    assert verified_weights(tmp_path, payload, "thing")[1] == first
    legacy = {
        "weights_file": "c.safetensors",
        "weights_sha256": sha256_file(tmp_path / "c.safetensors"),
    }
    assert verified_weights(tmp_path, legacy, "thing")[1] == legacy["weights_sha256"]
    cut = tmp_path / "a.safetensors"
    cut.write_bytes(cut.read_bytes()[:-5])
    with pytest.raises(ChecksumError, match="changed or corrupted"):
        verified_weights(tmp_path, payload, "thing")


def test_saved_descriptor_names_its_file_for_a_missing_entry_or_a_wrong_shape(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"format": "f"}))
    payload = read_saved_json(tmp_path, "config.json", "f", 1, "aligner")
    with pytest.raises(ValueError, match=r"config.json: no 'aligner' entry; the saved aligner"):
        payload["aligner"]
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: not a saved aligner descriptor"):
        read_saved_json(tmp_path, "config.json", "f", 1, "aligner")
