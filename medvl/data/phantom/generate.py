"""Phantom chest radiographs paired with real reports: the embedded default image-report data.

No radiograph pixels can be downloaded in medvl's offline setting, but real report text and
real anatomy geometry can. :func:`generate_phantoms` pairs each phantom study with one real
Indiana University report and draws what that report's CheXpert labels say (see
``phantom_plan`` for the rules), on anatomy built from real lung annotations, with real
pneumothorax shapes, written as real DICOM with headers sampled from the real IU header table.

Output layout under ``out_dir``::

    studies.jsonl           Study records (the report, its labels, images with mask paths)
    seg_samples.jsonl       one SegSample per (image, structure) for SAM decoder training
    phantom_truth.jsonl     per study: what was drawn, where, how visible (see below)
    phantom_info.json       generation parameters, their hash (``config_hash``) and counts
    images/<study>/<image>.dcm
    masks/<study>/<image>/<structure>.png

``Study.labels`` are the report's labels (what a model is trained on). ``phantom_truth.jsonl``
records the pixels' truth: ``drawn`` (CheXpert findings in the study's images), per image
``drawn`` (the lateral view shows fewer), uncertain labels left undrawn, extras, CTR.

Generation is deterministic: study ``i`` depends only on ``(seed, i)`` and its report, so the
bytes are identical for any number of workers.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medvl.data.phantom.config import UNCOMPRESSED, PhantomConfig, phantom_hash
from medvl.data.phantom.dicom import (
    HeaderSampler,
    build_dataset,
    make_identity,
    stored_values,
    write_dataset,
)
from medvl.data.phantom.lateral import render_lateral
from medvl.data.phantom.plan import plan_study
from medvl.data.phantom.render import Banks, Rendered, render_frontal
from medvl.data.phantom.shapes import load_lung_bank, load_pneumothorax_bank
from medvl.data.records import ImageRecord, SegSample, Study, split_of, write_manifest
from medvl.data.sources.assets import SIIM_RLE, V7_LUNG_MASKS, asset_path
from medvl.data.sources.iu.headers import FRONTAL_VIEWS, LATERAL_VIEWS, load_header_table
from medvl.io.dicom import hash_uid

log = logging.getLogger(__name__)

SOURCE = "phantom_cxr"
STUDIES_MANIFEST = "studies.jsonl"
SEG_MANIFEST = "seg_samples.jsonl"
TRUTH_FILE = "phantom_truth.jsonl"
INFO_FILE = "phantom_info.json"
FACING_RIGHT_P = 0.73  # share of IU laterals with PatientOrientation A\F (484 of 665)


@dataclass
class _Context:
    """What every worker needs; sent once per worker process."""

    banks: Banks
    sampler: HeaderSampler
    out_dir: Path
    size: int
    seed: int
    transfer_syntax: str = UNCOMPRESSED


_CONTEXT: _Context | None = None


def _init_worker(context: _Context) -> None:
    global _CONTEXT
    _CONTEXT = context


def pair_reports(studies: list[Study], n_studies: int, seed: int) -> list[Study]:
    """``n_studies`` reports in a seeded order: every report once before any repeats.

    Reports without labels (IU "No Indexing") are left out: their pixels could not be checked
    against what the text says.
    """
    usable = [s for s in studies if s.labels and (s.model_text or s.report_text)]
    if not usable:
        raise ValueError("no labelled reports to pair phantoms with")
    rng = np.random.default_rng([seed, 7919])
    order: list[Study] = []
    while len(order) < n_studies:
        order.extend(usable[i] for i in rng.permutation(len(usable)))
    return order[:n_studies]


def study_views(study: Study) -> list[tuple[str, str]]:
    """(view position, real image id) for each phantom image: a frontal, plus a lateral when
    the real study has one. An image of unknown view beside a frontal counts as the lateral
    (IU studies are PA + lateral by protocol); a study with no images gets one PA."""
    frontal = next(
        ((i.view_position, i.image_id) for i in study.images if i.view_position in FRONTAL_VIEWS),
        None,
    )
    lateral = next(
        ((i.view_position, i.image_id) for i in study.images if i.view_position in LATERAL_VIEWS),
        None,
    )
    unknown = [i.image_id for i in study.images if not i.view_position]
    if frontal is None:
        frontal = ("PA", unknown.pop(0) if unknown else "")
    if lateral is None and unknown:
        lateral = ("LL", unknown[0])
    return [frontal] if lateral is None else [frontal, lateral]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def mask_png(mask: np.ndarray) -> bytes:
    """A boolean mask as a 1-bit grayscale PNG (0 black, 1 white).

    Written directly (packbits + zlib level 1, no row filters): several times faster than
    Pillow for the mostly-empty masks of a phantom, which matters at 1024 x 1024.
    """
    rows, cols = mask.shape
    packed = np.packbits(mask.astype(bool, copy=False), axis=1)
    raw = np.concatenate([np.zeros((rows, 1), np.uint8), packed], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", cols, rows, 1, 0, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
         _png_chunk(b"IDAT", zlib.compress(raw, 1)), _png_chunk(b"IEND", b""))
    )  # fmt: skip


def _save_masks(folder: Path, masks: dict[str, np.ndarray]) -> dict[str, str]:
    paths = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(masks):
        path = folder / f"{name}.png"
        path.write_bytes(mask_png(masks[name]))
        paths[name] = str(path)
    return paths


def render_study(
    index: int, source: Study, context: _Context
) -> tuple[Study, dict, list[SegSample]]:
    """Render, write and describe phantom study ``index`` paired with report ``source``."""
    rng = np.random.default_rng([context.seed, index])
    plan = plan_study(source, rng)
    study_id = f"phantom-{index:06d}"
    patient_key = f"phantom-{source.patient_key}"
    split = source.split or split_of(patient_key)
    images, image_truth, seg = [], [], []
    for k, (view, real_id) in enumerate(study_views(source)):
        lateral = view not in FRONTAL_VIEWS
        choice = context.sampler.choose(real_id, lateral, rng)
        spacing = choice.field_mm / context.size
        facing_right = rng.random() < FACING_RIGHT_P
        if lateral:
            rendered = render_lateral(plan, rng, context.size, spacing, context.banks, facing_right)
            orientation = ("A", "F") if facing_right else ("P", "F")
        else:
            rendered = render_frontal(plan, rng, context.size, spacing, context.banks)
            orientation = ("L", "F")
        image_id = f"{study_id}-{k + 1}-{view.lower()}"
        identity = make_identity(context.seed, index, k)
        stored, window = stored_values(rendered.pixels, choice, rng)
        ds = build_dataset(stored, window, choice, identity, view, orientation, spacing)
        path = context.out_dir / "images" / study_id / f"{image_id}.dcm"
        digest = write_dataset(path, ds, context.transfer_syntax)
        masks = _save_masks(context.out_dir / "masks" / study_id / image_id, rendered.masks)
        record = ImageRecord(
            path=str(path),
            image_id=image_id,
            study_id=study_id,
            patient_key=patient_key,
            modality=choice.modality,
            view_position=view,
            photometric=choice.photometric,
            rows=context.size,
            columns=context.size,
            bits_stored=choice.bits_stored,
            pixel_spacing=(spacing, spacing),
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            sop_uid_hash=hash_uid(identity.sop_uid),
            series_uid_hash=hash_uid(identity.series_uid),
            study_uid_hash=hash_uid(identity.study_uid),
            content_hash=digest,
            masks=masks,
        )
        images.append(record)
        seg.extend(
            SegSample(
                image_path=str(path),
                mask_path=mask_path,
                structure=name,
                image_id=image_id,
                patient_key=patient_key,
                pixel_spacing=(spacing, spacing),
                split=split,
            )
            for name, mask_path in masks.items()
        )
        image_truth.append(
            _image_truth(image_id, view, rendered, choice.source_image, choice.photometric)
        )
    study = Study(
        study_id=study_id,
        patient_key=patient_key,
        source=SOURCE,
        report_text=source.report_text,
        sections=dict(source.sections),
        labels=dict(source.labels),
        mesh=list(source.mesh),
        images=images,
        split=split,
    )
    truth = {
        "study_id": study_id,
        "report_study_id": source.study_id,
        "drawn": plan.drawn,
        "uncertain_not_drawn": plan.uncertain_not_drawn,
        "extras": [spec.finding for spec in plan.extras],
        "findings": [spec.to_dict() for spec in (*plan.findings, *plan.extras)],
        "ctr": round(plan.ctr, 4),
        "images": image_truth,
    }
    return study, truth, seg


def _image_truth(
    image_id: str, view: str, rendered: Rendered, header_image: str, photometric: str
) -> dict:
    return {
        "image_id": image_id,
        "view": view,
        "drawn": rendered.drawn,
        "masks": sorted(rendered.masks),
        "measures": rendered.measures,
        "header_from": header_image,
        "photometric": photometric,
        "side_marker": rendered.marker,
    }


def _work(task: tuple[int, Study]):
    assert _CONTEXT is not None, "worker not initialised"
    return render_study(task[0], task[1], _CONTEXT)


def load_banks() -> Banks:
    """The real shape banks (decoded once and cached on disk; see ``phantom_shapes``)."""
    return Banks(
        lungs=load_lung_bank(asset_path(V7_LUNG_MASKS)),
        pneumothorax=load_pneumothorax_bank(asset_path(SIIM_RLE)),
    )


def generate_phantoms(
    n_studies: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = 1024,
    workers: int = 2,
    reports: str | None = None,
    label_source: Literal["mesh", "labeler"] = "mesh",
    studies: list[Study] | None = None,
    progress: bool = True,
    transfer_syntax: str = UNCOMPRESSED,
) -> Path:
    """Generate ``n_studies`` phantom studies under ``out_dir``; return the studies manifest.

    Parameters
    ----------
    n_studies
        How many studies (each one frontal image, plus a lateral when its report's real study
        had one).
    out_dir
        Output folder (layout in the module docstring).
    seed
        Same seed, same bytes (for any ``workers``).
    size
        Image side in pixels (square); tests use 128-256, training 512-1024.
    workers
        Processes; 0 or 1 renders in this process.
    reports, label_source
        The IU report archive (``None``: the shipped copy) and how its labels are read
        (MeSH terms or the text labeler).
    studies
        Reports to pair with instead of the IU archive; the folder then records no
        ``config_hash``, so :func:`~medvl.data.phantom.ensure_phantoms` never reuses it.
    progress
        Show a tqdm progress bar.
    transfer_syntax
        The images' transfer syntax UID: uncompressed, or a lossless one (HTJ2K included).
    """
    from tqdm import tqdm

    wanted = PhantomConfig(  # validates
        n_studies=n_studies,
        seed=seed,
        size=size,
        workers=workers,
        reports=reports,
        label_source=label_source,
        transfer_syntax=transfer_syntax,
    )
    key = None
    if studies is None:
        from medvl.data.sources.iu.xray import load_iu_studies

        studies = load_iu_studies(reports, label_source=label_source)
        key = phantom_hash(wanted)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    context = _Context(
        load_banks(), HeaderSampler(load_header_table()), out_dir, size, seed, transfer_syntax
    )
    tasks = list(enumerate(pair_reports(studies, n_studies, seed)))
    results = []
    bar = tqdm(total=len(tasks), desc="phantoms", unit="study", disable=not progress)
    if workers <= 1:
        for task in tasks:
            results.append(render_study(task[0], task[1], context))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(context,)) as pool:
            for result in pool.map(_work, tasks, chunksize=4):
                results.append(result)
                bar.update()
    bar.close()
    manifest = write_manifest(out_dir / STUDIES_MANIFEST, [r[0] for r in results])
    write_manifest(out_dir / SEG_MANIFEST, [s for r in results for s in r[2]])
    with (out_dir / TRUTH_FILE).open("w") as fh:
        for _, truth, _ in results:
            fh.write(json.dumps(truth, sort_keys=True) + "\n")
    info = {
        "source": SOURCE,
        "n_studies": n_studies,
        "seed": seed,
        "size": size,
        "reports": reports if key else "studies passed by the caller",
        "label_source": label_source if key else None,
        "transfer_syntax": transfer_syntax,
        "config_hash": key,
        "n_images": sum(len(r[0].images) for r in results),
        "lung_templates": len(context.banks.lungs),
        "pneumothorax_shapes": len(context.banks.pneumothorax),
    }
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("%d phantom studies (%d images) written to %s", n_studies, info["n_images"], out_dir)
    return manifest


def load_truth(out_dir: str | Path) -> dict[str, dict]:
    """``phantom_truth.jsonl`` as ``{study_id: truth}``."""
    path = Path(out_dir) / TRUTH_FILE
    with path.open() as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return {row["study_id"]: row for row in rows}
