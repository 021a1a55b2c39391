"""Where the SAM job's segmentation samples come from, and how they are split.

``data.source`` picks one of:

- ``phantom``: the embedded default, phantom chest radiographs with lung, heart and lesion
  masks, as ``data.phantom`` describes them, generated under ``data.path`` (default
  ``OUT/phantoms``) by :func:`medvl.data.phantom.ensure_phantoms`: reused while the recorded
  settings match, regenerated when they differ;
- ``manifest``: a SegSample JSONL/Parquet manifest, or a Study manifest whose images carry
  ``masks`` (one sample per image and structure);
- ``mask_folder``: a generic image/mask folder (:mod:`medvl.data.sources.mask_folder`);
- ``siim``: the SIIM-ACR pneumothorax layout (DICOM + RLE).

Splits come from the samples (set by their source, patient-level); samples without one are
split by patient key. ``structures`` keeps only the named structures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medvl.data.phantom import PhantomConfig
from medvl.data.records import Failure, SegSample, Study, read_manifest, split_of

logger = logging.getLogger(__name__)


@dataclass
class SegDataConfig:
    """Segmentation data of the SAM job."""

    source: Literal["phantom", "manifest", "mask_folder", "siim"] = "phantom"
    path: str | None = None  # manifest file, dataset root, or phantom folder
    structures: list[str] = field(default_factory=list)  # empty: every structure
    window: tuple[float, float] | str | None = None  # for NIfTI/CT; DICOM uses its own VOI
    phantom: PhantomConfig = field(  # source phantom: what to generate
        default_factory=lambda: PhantomConfig(n_studies=40, size=512)
    )
    mask_structure: str = "foreground"  # mask_folder: name of a binary mask's structure
    mask_labels: dict[int, str] = field(default_factory=dict)  # mask_folder: label -> name
    include_empty: bool = False  # mask_folder / siim: keep empty-mask samples (reported apart)
    max_train: int = 0  # 0: all
    max_val: int = 0
    split_seed: int = 0


def _phantom_samples(config: SegDataConfig, out_dir: Path) -> list[SegSample]:
    from medvl.data.phantom import SEG_MANIFEST, ensure_phantoms

    folder = Path(config.path) if config.path else out_dir / "phantoms"
    manifest = ensure_phantoms(config.phantom, folder)
    return read_manifest(manifest.parent / SEG_MANIFEST, SegSample)


def samples_from_studies(studies: list[Study]) -> list[SegSample]:
    """One SegSample per (image, structure) of studies whose images carry ``masks``."""
    return [
        SegSample(
            image_path=image.path,
            mask_path=mask_path,
            structure=name,
            image_id=image.image_id,
            patient_key=study.patient_key,
            pixel_spacing=image.pixel_spacing,
            split=study.split,
        )
        for study in studies
        for image in study.images
        for name, mask_path in sorted(image.masks.items())
    ]


def _manifest_samples(path: Path) -> list[SegSample]:
    try:
        return read_manifest(path, SegSample)
    except ValueError:
        return samples_from_studies(read_manifest(path, Study))


def load_seg_samples(config: SegDataConfig, out_dir: Path) -> tuple[list[SegSample], list[Failure]]:
    """Samples of the configured source (filtered by structure) and the inputs it skipped."""
    failures: list[Failure] = []
    if config.source == "phantom":
        samples = _phantom_samples(config, out_dir)
    elif config.path is None:
        raise ValueError(f"data.path is required for data.source={config.source!r}")
    elif config.source == "manifest":
        samples = _manifest_samples(Path(config.path))
    elif config.source == "mask_folder":
        from medvl.data.sources.mask_folder import load_mask_folder

        result = load_mask_folder(
            config.path,
            out_dir / "mask_folder",
            structure=config.mask_structure,
            labels=config.mask_labels or None,
            window=config.window,
            include_empty=config.include_empty,
            seed=config.split_seed,
        )
        samples, failures = result.seg_samples, result.failures
    else:
        from medvl.data.sources.siim_pneumothorax import load_siim

        result = load_siim(config.path, out_dir / "siim", include_empty=config.include_empty)
        samples, failures = result.seg_samples, result.failures
    if config.structures:
        keep = set(config.structures)
        samples = [s for s in samples if s.structure in keep]
    logger.info("%d segmentation samples from %s", len(samples), config.source)
    return samples, failures


def slab_split(
    n_slices: int,
    block: int,
    gap: int,
    pattern: tuple[str, ...] = ("train", "val", "train", "test"),
) -> list[str]:
    """The split of each slice of a volume: blocks of ``block`` slices cycle through ``pattern``.

    Neighbouring slices look alike, so a slice-wise random split leaks the test set into
    training. Blocks (slabs) keep neighbours together, and the ``gap`` slices after every block
    belong to no split (``""``), so no slice of one split touches a slice of another.
    """
    if block < 1 or gap < 0 or not pattern:
        raise ValueError(f"slab split needs block >= 1, gap >= 0 and a pattern; got {block}, {gap}")
    out = [""] * n_slices
    for number, start in enumerate(range(0, n_slices, block + gap)):
        for z in range(start, min(start + block, n_slices)):
            out[z] = pattern[number % len(pattern)]
    return out


def split_samples(samples: list[SegSample], config: SegDataConfig) -> dict[str, list[SegSample]]:
    """Samples by split (``train``, ``val``, ``test``), capped by ``max_train`` / ``max_val``.

    When no sample is in ``val``, a fifth of the training patients is held out for it (small
    phantom sets), still patient-level.
    """
    out: dict[str, list[SegSample]] = {"train": [], "val": [], "test": []}
    for sample in sorted(samples, key=lambda s: (s.image_id, s.structure, s.image_path)):
        split = sample.split or split_of(sample.patient_key, seed=config.split_seed)
        out.setdefault(split, []).append(sample)
    if not out["val"] and out["train"]:
        moved = [
            s
            for s in out["train"]
            if split_of(s.patient_key, (0.8, 0.2, 0.0), config.split_seed) == "val"
        ]
        taken = {id(s) for s in moved}
        out["val"] = moved
        out["train"] = [s for s in out["train"] if id(s) not in taken]
        logger.warning(
            "no validation split in the data; held out %d samples by patient", len(moved)
        )
    if config.max_train:
        out["train"] = out["train"][: config.max_train]
    if config.max_val:
        out["val"] = out["val"][: config.max_val]
    return out
