"""``medvl segment-finetune`` (train SAM's mask decoder) and ``medvl segment`` (apply it).

``segment`` reads a DICOM, NIfTI, PNG or ``.npy`` image (or a folder holding one DICOM series),
prompts the saved model with a box in the image's own pixel coordinates and writes, under
``--out``: ``mask.png`` (2-D) and ``mask.npy`` in the image's geometry, ``overlay.png`` (image |
image | prediction) and ``result.json`` (box, area in pixels and mm², predicted IoU, model
SHA-256). A volume is segmented slice by slice over ``--slices z0:z1`` (all slices by default),
with the same box on every slice or, with ``--propagate``, starting from the middle slice.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medvl.cli.common import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    echo_main,
    exit_on_error,
    job_config,
    setup_logging,
)

VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")


def _parse_floats(text: str, count: int, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise typer.BadParameter(f"{name} needs {count} comma-separated numbers, got {text!r}")
    return values


def _parse_window(text: str | None) -> tuple[float, float] | str | None:
    if text is None:
        return None
    if "," in text:
        center, width = _parse_floats(text, 2, "--window")
        return center, width
    return text


def finetune_command(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Fine-tune SAM's mask decoder (frozen encoder, cached embeddings) on segmentation data.

    Overrides: model.variant=vit_b model.checkpoint=FILE model.train_mode=decoder+lora
    data.source=phantom|manifest|mask_folder|siim data.path=... data.structures=[lungs]
    prompts.jitter=medsam train.max_steps=2000 train.mixed_precision=bf16 ...
    """
    from medvl.train.segment import SegmentConfig, run_segment_finetune

    setup_logging(verbose)
    job = job_config(SegmentConfig, config, overrides)
    with exit_on_error():
        result = run_segment_finetune(job)
    final = result.metrics.get("val", {}).get("all", {})
    echo_main(
        f"{result.n_train} train / {result.n_val} val samples, {result.encoded} images encoded "
        f"(others from the cache); val Dice "
        f"{result.initial_dice:.3f} -> {final.get('dice_mean', float('nan')):.3f} "
        f"(NSD {final.get('nsd_mean', float('nan')):.3f}); model in {result.model_dir}"
    )


def segment_command(
    model: Path = typer.Option(
        ..., "--model", "-m", help="Saved SAM directory, or a SAM/MedSAM checkpoint file."
    ),
    image: Path = typer.Option(..., "--image", "-i", help="DICOM/NIfTI/PNG/.npy or series dir."),
    box: str = typer.Option(..., "--box", "-b", help="x0,y0,x1,y1 in image pixels."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    window: str | None = typer.Option(None, help="center,width or CT preset (NIfTI/CT)."),
    slices: str | None = typer.Option(None, help="z0:z1 for volumes (inclusive)."),
    propagate: bool = typer.Option(False, help="Volumes: propagate from the middle slice."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: cuda if present)."),
    preprocessing: str | None = typer.Option(
        None, help="sam or medsam (MedSAM's own inference); default: the model's setting."
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Segment one image (or volume) with a SAM (saved directory or raw checkpoint) and a box."""
    import numpy as np

    from medvl.data.sources.common import write_mask_png
    from medvl.data.sources.mask_folder import read_seg_image
    from medvl.eval.overlays import save_overlay
    from medvl.models.sam import create_sam
    from medvl.models.sam.predict import SamSegmenter

    setup_logging(verbose)
    xyxy = np.asarray(_parse_floats(box, 4, "--box"))
    with exit_on_error():
        seg_image = read_seg_image(image, _parse_window(window))
        settings = {"preprocessing": preprocessing} if preprocessing else {}
        segmenter = SamSegmenter(create_sam(model, **settings), device=device)
    pixels = seg_image.pixels
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {
        "image": str(image),
        "box": xyxy.tolist(),
        "shape": list(pixels.shape),
    }
    if pixels.ndim == 2:
        prediction = segmenter.predict(pixels, boxes=xyxy[None])
        mask, score = prediction.masks[0], float(prediction.scores[0])
        shown, mask_shown = pixels, mask
        write_mask_png(out / "mask.png", mask)
        summary["predicted_iou"] = score
    else:
        z_range = None
        if slices:
            z0, z1 = (int(v) for v in slices.split(":"))
            z_range = (z0, z1)
        result = segmenter.predict_volume(
            pixels, xyxy, z_range, mode="propagate" if propagate else "box3d"
        )
        mask = result.mask
        best = int(np.argmax(mask.sum(axis=(1, 2))))
        shown, mask_shown = pixels[best], mask[best]
        summary["slices"] = {str(z): s for z, s in sorted(result.scores.items())}
        summary["overlay_slice"] = best
    np.save(out / "mask.npy", mask)
    save_overlay(out / "overlay.png", shown, None, mask_shown)
    spacing = seg_image.spacing
    summary["area_px"] = int(mask.sum())
    if spacing is not None:
        summary["volume_mm3" if mask.ndim == 3 else "area_mm2"] = float(
            mask.sum() * np.prod(spacing)
        )
    summary["model_sha256"] = segmenter.model.weights_sha256
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    echo_main(f"{summary['area_px']} pixels segmented; mask and overlay in {out}")


def register(app: typer.Typer) -> None:
    """Attach ``segment-finetune`` and ``segment`` to the main app."""
    app.command("segment-finetune")(finetune_command)
    app.command("segment")(segment_command)
