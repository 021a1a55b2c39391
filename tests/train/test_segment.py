"""SAM decoder fine-tuning on phantom lungs: Dice rises, frozen parts stay bitwise, cache hits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.config import ConfigError, from_dict, load_config
from medvl.data.records import SegSample
from medvl.data.seg_samples import SegDataConfig, split_samples
from medvl.models.sam import SamConfig, SamModel, build_sam
from medvl.models.sam.loss import LossConfig, SamSegLoss, valid_area
from medvl.train.segment import SegmentConfig, run_segment_finetune

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _config(tmp: Path, manifest: Path, out: str, **train) -> SegmentConfig:
    base = {
        "output_dir": str(tmp / out),
        "model": {"variant": "tiny", "img_size": 64},
        "data": {"source": "manifest", "path": str(manifest),
                 "structures": ["lung_left", "lung_right", "lungs"]},
        "prompts": {"jitter": "medsam", "jitter_px": 20},
        "cache": {"dir": str(tmp / "cache")},
        "eval": {"overlays": 2},
        "train": {"max_steps": 90, "batch_size": 8, "lr": 3e-3, "schedule": "constant",
                  "warmup_steps": 5, "eval_every": 30, "best_metric": "dice", "cpu": True,
                  "progress": False, "tensorboard": False, **train},
    }  # fmt: skip
    return from_dict(SegmentConfig, base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_phantoms):
    """One short CPU run on the shared 64 px phantom studies (40 studies, lungs only)."""
    tmp = tmp_path_factory.mktemp("sam_job")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: far faster
    try:
        config = _config(tmp, small_phantoms, "run")
        yield tmp, small_phantoms, config, run_segment_finetune(config)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_dice_rises_on_phantom_lungs(trained) -> None:
    *_, result = trained
    dice = [e["dice"] for e in result.train.evals]
    assert result.n_train >= 8 and result.n_val >= 2
    assert result.initial_dice < 0.5
    assert max(dice) > result.initial_dice + 0.3 and max(dice) > 0.65, (result.initial_dice, dice)
    val = result.metrics["val"]["all"]
    assert val["dice_mean"] == pytest.approx(max(dice), abs=1e-6)  # the best checkpoint was kept
    assert 0 < val["nsd_mean"] <= 1 and val["hd95_mean"] > 0


@pytest.mark.slow
def test_frozen_parts_are_bitwise_unchanged(trained) -> None:
    *_, config, result = trained
    fresh = build_sam(config.model)  # the same seeded initialisation the run started from
    trained_model = SamModel.from_pretrained(result.model_dir)
    before, after = fresh.state_dict(), trained_model.state_dict()
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(("image_encoder.", "prompt_encoder."))]
    unused = [k for k in before if k.startswith("mask_decoder.output_hypernetworks_mlps.")
              and not k.startswith("mask_decoder.output_hypernetworks_mlps.0.")]  # fmt: skip
    assert len(frozen) > 20 and len(unused) == 18
    for key in frozen + unused:
        assert torch.equal(before[key], after[key]), key
    decoder = [k for k in before if k.startswith("mask_decoder.") and k not in unused]
    changed = [k for k in decoder if not torch.equal(before[k], after[k])]
    assert len(changed) == len(decoder), sorted(set(decoder) - set(changed))


@pytest.mark.slow
def test_run_outputs(trained) -> None:
    *_, result = trained
    out = result.output_dir
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["splits"]["val"]) >= {"all", "lung_left", "lung_right"}
    rows = [json.loads(line) for line in (out / "cases_val.jsonl").read_text().splitlines()]
    assert len(rows) == result.n_val and all(r["units"] == "mm" for r in rows)
    assert len(list((out / "overlays" / "val").glob("*.png"))) == 2
    assert (out / "config.yaml").is_file() and (out / "model" / "config.json").is_file()
    assert (out / "train" / "metrics.jsonl").is_file()  # the engine run, as in fine-tuning
    assert (out / "train" / "checkpoints").is_dir() and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_cli_rerun_hits_the_cache_and_segment_writes_a_mask(trained) -> None:
    tmp, manifest, _, result = trained
    runner = CliRunner()
    args = ["segment-finetune", "train.max_steps=2", "train.eval_every=0",
            f"output_dir={tmp / 'rerun'}", "train.cpu=true", "train.progress=false",
            "train.tensorboard=false", "data.source=manifest", f"data.path={manifest}",
            "data.structures=[lung_left,lung_right,lungs]", "model.img_size=64",
            f"cache.dir={tmp / 'cache'}", "eval.overlays=0"]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert " 0 images encoded" in done.output
    image = json.loads(manifest.read_text().splitlines()[0])["images"][0]["path"]
    out = tmp / "segment-out"
    args = ["segment", "--model", str(result.model_dir), "--image", image, "--box", "5,8,30,50",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    mask = np.load(out / "mask.npy")
    assert mask.shape == (64, 64) and mask.dtype == bool
    info = json.loads((out / "result.json").read_text())
    assert info["area_px"] == int(mask.sum()) and "area_mm2" in info
    assert (out / "mask.png").is_file() and (out / "overlay.png").is_file()
    bad = runner.invoke(app, ["segment", "--model", str(result.model_dir), "--image", image,
                              "--box", "1,2,3", "--out", str(out)])  # fmt: skip
    assert bad.exit_code != 0


@pytest.mark.slow
def test_lora_mode_trains_adapters_from_the_pixel_cache(trained) -> None:
    tmp, manifest, _, _ = trained
    config = _config(tmp, manifest, "lora", max_steps=3, eval_every=0)
    config.model.train_mode = "decoder+lora"
    config.model.lora_r = 2
    result = run_segment_finetune(config)
    model = SamModel.from_pretrained(result.model_dir)
    fresh = build_sam(config.model)
    base = {k: v for k, v in fresh.state_dict().items() if k.startswith("image_encoder.")}
    after = model.state_dict()
    lora_b = [k for k in base if "lora_B" in k]
    assert lora_b and all(not torch.equal(base[k], after[k]) for k in lora_b)
    assert all(torch.equal(v, after[k]) for k, v in base.items() if "lora_" not in k)
    kinds = {
        json.loads(p.read_text())["namespace"]["kind"] for p in (tmp / "cache").glob("*/meta.json")
    }
    assert kinds == {"embedding", "pixels"}


def test_loss_ignores_padding_and_scores_the_best_mask() -> None:
    loss_fn = SamSegLoss(LossConfig(dice=1.0, bce=1.0, focal=0.5, iou=1.0))
    target = torch.zeros(2, 8, 8)
    target[:, 1:4, 1:4] = 1.0
    valid = valid_area(torch.tensor([[32, 16], [32, 32]]), 8, 32)
    assert valid[0, :, 4:].sum() == 0 and valid[1].all()
    good = torch.where(target > 0, 8.0, -8.0)[:, None]
    noisy = good.clone()
    noisy[0, 0, :, 4:] = 8.0  # garbage in the padding of the non-square image
    iou = torch.ones(2, 1)
    a, logs = loss_fn(good, iou, target, valid)
    b, _ = loss_fn(noisy, iou, target, valid)
    assert torch.allclose(a, b) and a < 0.01 and logs["train_iou"] == 1.0
    bad = -good
    multi = torch.cat([bad, good, bad], dim=1)
    c, _ = loss_fn(multi, torch.tensor([[0.0, 1.0, 0.0]] * 2), target, valid)
    assert torch.allclose(c, a, atol=1e-6)  # the best of three masks is scored
    wrong_iou, _ = loss_fn(good, torch.zeros(2, 1), target, valid)
    assert wrong_iou > a + 0.9  # IoU head regressed towards the true IoU of 1
    with pytest.raises(ValueError):
        LossConfig(dice=0, bce=0, focal=0, iou=0)


@pytest.mark.parametrize("name", ["sam_phantom_lungs.yaml", "sam_phantom_lungs_tiny.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(SegmentConfig, Path(__file__).parents[2] / "configs" / name)
    assert config.data.source == "phantom" and config.train.best_metric == "dice"
    assert set(config.data.structures) == {"lung_left", "lung_right", "lungs"}
    assert config.output_dir.parts[0] == "runs" and config.train.output_dir is None


def test_output_dir_is_top_level_and_phantom_defaults_survive_a_partial_section() -> None:
    with pytest.raises(ConfigError, match=r"train\.output_dir .*set output_dir instead"):
        from_dict(SegmentConfig, {"train": {"output_dir": "runs/elsewhere"}})
    config = from_dict(SegmentConfig, {}, ["data.phantom.seed=3"])
    phantom = config.data.phantom
    assert (phantom.n_studies, phantom.size, phantom.seed) == (40, 512, 3)
    assert config.train.best_metric == "dice"


def test_split_falls_back_to_a_patient_holdout() -> None:
    samples = [SegSample(f"im{i}.dcm", f"m{i}.png", "lungs", f"im{i}", f"p{i % 10}", split="train")
               for i in range(40)]  # fmt: skip
    parts = split_samples(samples, SegDataConfig())
    assert parts["val"] and parts["train"]
    val_patients = {s.patient_key for s in parts["val"]}
    assert not val_patients & {s.patient_key for s in parts["train"]}
    capped = split_samples(samples, SegDataConfig(max_train=5, max_val=1))
    assert len(capped["train"]) == 5 and len(capped["val"]) == 1


def test_feature_store_reads_the_same_from_ram_and_memory_maps(tmp_path) -> None:
    from medvl.models.sam.cache import ArrayImageSource, encode_images, open_cache
    from medvl.models.sam.features import FeatureStore

    model = build_sam(SamConfig(variant="tiny", img_size=64))
    images = [np.random.default_rng(i).random((50, 64), dtype=np.float32) for i in range(3)]
    source = ArrayImageSource(images)
    cache = open_cache(model, source, tmp_path, shard_size=2)
    refs = encode_images(model, source, cache).refs
    in_ram = FeatureStore(cache, refs + [None], preload=True)
    mapped = FeatureStore(cache, refs + [None], preload=True, max_preload_gib=1e-9)
    assert in_ram.preloaded is not None and mapped.preloaded is None
    for i in range(3):
        assert in_ram[i].dtype == torch.float16 and torch.equal(in_ram[i], mapped[i])
    with pytest.raises(KeyError):
        mapped[3]


def test_cli_segments_a_nifti_volume_slice_by_slice(tmp_path) -> None:
    import nibabel as nib

    build_sam(SamConfig(variant="tiny", img_size=64)).save_pretrained(tmp_path / "model")
    volume = np.random.default_rng(0).random((40, 30, 6)).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.5, 1.0])), tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    image = str(tmp_path / "ct.nii.gz")
    args = ["segment", "--model", str(tmp_path / "model"), "--image", image, "--box", "5,5,25,28",
            "--slices", "1:3", "--out", str(out), "--device", "cpu"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    mask = np.load(out / "mask.npy")
    assert mask.shape == (6, 30, 40) and not mask[[0, 4, 5]].any()
    info = json.loads((out / "result.json").read_text())
    assert sorted(info["slices"]) == ["1", "2", "3"] and "volume_mm3" in info
