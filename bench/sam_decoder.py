"""Benchmark SAM decoder fine-tuning: cached embeddings versus a MedSAM-style loop.

Same model, same data, same run, same step (prompt simulation + prompt encoder + batched mask
decoder + Dice/BCE/IoU loss + AdamW), two ways of getting the image embedding:

* ``cached``: the frozen encoder ran once per image (``encode_images`` into the fp16
  memory-mapped cache, bf16 autocast on GPU); each step reads embeddings (preloaded in RAM,
  or resident on the device with ``--features-on-device``);
* ``medsam-style``: each step runs the frozen encoder on the batch (no grad, bf16 autocast on
  GPU), as MedSAM's training script does, from preprocessed inputs already in RAM (MedSAM
  preloads 1024 px ``.npy`` images).

Reported: images/s of each loop in steady state (after ``--warmup`` steps), the speed-up, the
one-off cache build time, and the speed-up over ``--epochs`` epochs counting that build.
Random weights and synthetic images: speed does not depend on what the weights are.

Usage::

    python bench/sam_decoder.py --model tiny --device cpu
    python bench/sam_decoder.py --model vit_b --device cuda --batch-size 16 --images 128

Prints a table and writes ``runs/bench/sam_decoder-<model>-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medvl.models.sam import SamConfig, build_sam  # noqa: E402
from medvl.models.sam.cache import ArrayImageSource, encode_images, open_cache  # noqa: E402
from medvl.models.sam.geometry import SamGeometry, mask_box, resize_longest  # noqa: E402
from medvl.models.sam.loss import SamSegLoss, valid_area  # noqa: E402
from medvl.models.sam.prompts import PromptConfig, simulate_prompts  # noqa: E402


def synthetic_case(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth gray image in [0, 1] with a brighter ellipse, and the ellipse's mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    ry, rx = rng.uniform(0.1, 0.25) * height, rng.uniform(0.1, 0.25) * width
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    image = 0.3 + 0.2 * np.sin(xx / (7 + seed % 5)) * np.cos(yy / 11) + 0.35 * mask
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), mask


def prepare(n: int, img_size: int, seed: int) -> dict[str, Any]:
    """Images (non-square), their resized inputs, low-res targets and model-frame boxes."""
    images, gray, sizes, targets, boxes = [], [], [], [], []
    base = max(img_size, 64)
    for i in range(n):
        h, w = base, int(base * (0.75 + 0.25 * (i % 2)))
        image, mask = synthetic_case(seed + i, h, w)
        g, geometry = resize_longest(image, img_size)
        geo = SamGeometry.for_shape(h, w, img_size)
        images.append(image)
        gray.append(g)
        sizes.append(geometry.input_size)
        targets.append(geo.mask_to_model(mask, img_size // 4))
        boxes.append(torch.as_tensor(geo.boxes_to_model(mask_box(mask)), dtype=torch.float32))
    return {
        "images": images,
        "gray": torch.stack(gray),
        "input_size": torch.tensor(sizes),
        "target": torch.stack(targets),
        "box": torch.stack(boxes),
    }


def run_loop(
    model: Any,
    data: dict[str, Any],
    embeddings: torch.Tensor | None,
    steps: int,
    warmup: int,
    batch_size: int,
    device: torch.device,
    on_device: bool,
) -> dict[str, float]:
    """Train the decoder for ``warmup + steps`` steps; time the last ``steps``."""
    criterion = SamSegLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    img_size = model.config.img_size
    n = data["gray"].shape[0]
    use_bf16 = device.type == "cuda"
    features = embeddings if embeddings is not None else data["gray"]
    if on_device:
        features = features.to(device)
    elif device.type == "cuda":
        features = features.pin_memory()
    generator = torch.Generator().manual_seed(0)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        batch = {
            k: data[k][idx].to(device, non_blocking=True) for k in ("input_size", "target", "box")
        }
        feats = features[idx.to(features.device)].to(device, non_blocking=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
            prompts = simulate_prompts(
                PromptConfig(), batch["box"], batch["target"], batch["input_size"], img_size
            )
            if embeddings is not None:
                out = model(image_embeddings=feats.float(), **prompts)
            else:
                out = model(gray=feats, input_sizes=batch["input_size"], **prompts)
            valid = valid_area(batch["input_size"], img_size // 4, img_size)
            loss, _ = criterion(out.low_res_logits, out.iou_pred, batch["target"], valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": steps * batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
        "final_loss": loss.item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "vit_b"), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--img-size", type=int, default=0, help="tiny only (default 256)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="for the amortised speed-up")
    parser.add_argument("--features-on-device", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    img_size = 1024 if args.model == "vit_b" else (args.img_size or 256)
    model = build_sam(SamConfig(variant=args.model, img_size=img_size)).to(device)
    data = prepare(args.images, img_size, seed=0)

    with tempfile.TemporaryDirectory() as tmp:
        source = ArrayImageSource(data["images"])
        cache = open_cache(model, source, tmp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        encoded = encode_images(model, source, cache, batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        build_s = time.perf_counter() - t0
        embeddings = torch.from_numpy(cache.read_many(encoded.refs))  # type: ignore[arg-type]
    common = dict(steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                  device=device, on_device=args.features_on_device)  # fmt: skip
    cached = run_loop(model, data, embeddings, **common)
    medsam = run_loop(model, data, None, **common)
    speedup = cached["images_per_s"] / medsam["images_per_s"]
    epoch_images = args.images * args.epochs
    amortised = (epoch_images / medsam["images_per_s"]) / (
        build_s + epoch_images / cached["images_per_s"]
    )
    result = {
        "model": args.model,
        "img_size": img_size,
        "device": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "images": args.images,
        "steps": args.steps,
        "features_on_device": args.features_on_device,
        "cache_build_s": build_s,
        "cache_build_images_per_s": args.images / build_s,
        "cached": cached,
        "medsam_style": medsam,
        "speedup": speedup,
        "epochs": args.epochs,
        "speedup_amortised": amortised,
        "torch": torch.__version__,
    }
    print(f"SAM decoder fine-tuning, {args.model} ({img_size} px), {result['device']}")
    print(f"batch {args.batch_size}, {torch.get_num_threads()} CPU threads")
    print(f"{'loop':<24}{'images/s':>12}{'ms/step':>12}")
    for name, row in (("cached embeddings", cached), ("medsam-style (encoder)", medsam)):
        print(f"{name:<24}{row['images_per_s']:>12.1f}{row['ms_per_step']:>12.1f}")
    print(f"speed-up {speedup:.1f}x; cache build {build_s:.2f} s ({args.images} images)")
    print(f"speed-up over {args.epochs} epochs including the cache build: {amortised:.1f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sam_decoder-{args.model}-{args.device}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
