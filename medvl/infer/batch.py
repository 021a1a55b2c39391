"""Study folders in, one result folder per study out: what ``medvl infer`` runs.

:func:`plan_studies` reads every folder's headers and groups instances by StudyInstanceUID
across folders (a study split over two folders is one study; a folder holding two studies gives
two). :func:`infer_folders` then analyses each study alone: a folder with nothing usable, or a
study whose analysis fails, is recorded with a reason and the others go on. Results go to
``<output_dir>/<study key>/`` (the hash of the StudyInstanceUID, never a folder name) and a
``summary.json`` lists every folder by its index in sorted order and every study by key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom

from medvl.data.processes import from_main_process, gather_shares, process_state, shard, unshard
from medvl.infer.errors import failure_reason
from medvl.infer.export import export_study
from medvl.infer.selection import study_files
from medvl.io.dicom import hash_uid

if TYPE_CHECKING:
    from medvl.infer.pipeline import InferencePipeline

logger = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    """What one study gave: where it was written, how many images were analysed or skipped."""

    study: str  # the opaque study key
    folders: list[int]  # indices of the input folders its files came from
    output: Path | None = None
    analysed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error: str | None = None  # why the study failed (no PHI)
    dicom_files: list[Path] = field(default_factory=list)  # SEG and SR


@dataclass
class FolderProblem:
    """An input folder that yielded no study, and why."""

    folder: int
    reason: str


@dataclass
class StudyPlan:
    """Files per study key (in input order) and the folders that held no DICOM."""

    studies: dict[str, list[Path]] = field(default_factory=dict)
    folders: dict[str, list[int]] = field(default_factory=dict)
    problems: list[FolderProblem] = field(default_factory=list)


@dataclass
class BatchSummary:
    """The outcomes of :func:`infer_folders`."""

    studies: list[StudyOutcome] = field(default_factory=list)
    problems: list[FolderProblem] = field(default_factory=list)

    @property
    def analysed(self) -> int:
        """Images analysed over all studies (0: nothing could be read; the CLI exits 1)."""
        return sum(study.analysed for study in self.studies)


def study_folders(root: Path, per_study: bool) -> list[Path]:
    """``root`` itself, or (``per_study``) its sub-folders sorted by name."""
    if not per_study:
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir())


def _study_uid(path: Path) -> str | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except Exception:  # not DICOM (pydicom raises several types for junk)
        return None
    return str(ds.get("StudyInstanceUID", "")) or None


def plan_studies(folders: list[Path]) -> StudyPlan:
    """Group the files of ``folders`` by StudyInstanceUID; non-DICOM files join their folder's
    first study (so they are reported as skipped there); folders without DICOM are problems."""
    plan = StudyPlan()
    for index, folder in enumerate(folders):
        files = study_files(folder)
        keys: list[str] = []
        loose: list[Path] = []
        for path in files:
            uid = _study_uid(path)
            if uid is None:
                loose.append(path)
                continue
            key = hash_uid(uid)
            plan.studies.setdefault(key, []).append(path)
            if key not in keys:
                keys.append(key)
        if not keys:
            reason = (
                "empty folder" if not files else f"no DICOM instance among {len(files)} file(s)"
            )
            plan.problems.append(FolderProblem(index, reason))
            continue
        plan.studies[keys[0]] += loose
        for key in keys:
            plan.folders.setdefault(key, []).append(index)
    return plan


def infer_study(
    pipeline: InferencePipeline, files: list[Path], output_dir: Path, key: str
) -> tuple[Path, int, int, float, list[Path]]:
    """Run ``pipeline`` on one study's files and export it to ``output_dir/<key>/``."""
    config = pipeline.config
    result = pipeline.run_study(files, study_key=key)
    output = output_dir / key
    written = export_study(
        result,
        output,
        write_seg=config.write_seg,
        write_sr=config.write_sr,
        include_identifiers=config.include_identifiers,
    )
    return (
        output,
        len(result.images) + len(result.series),
        len(result.skipped),
        result.seconds,
        written,
    )


def infer_folders(
    pipeline: InferencePipeline,
    folders: list[Path],
    output_dir: Path,
    on_study: Callable[[StudyOutcome], None] | None = None,
    progress: Callable[[Iterable], Iterable] = iter,
) -> BatchSummary:
    """Analyse and export every study found in ``folders``; each study fails or succeeds alone.

    Parameters
    ----------
    pipeline
        The loaded models and decision rules (loaded once, used for every study).
    folders
        Input folders (any depth each), e.g. from :func:`study_folders`.
    output_dir
        Each study goes to ``output_dir/<study key>/``; ``summary.json`` beside them.
    on_study
        Called after each study (the CLI prints a line per study from it).
    progress
        Wraps the iteration over studies (a progress bar).
    """
    plan = plan_studies(folders)
    summary = BatchSummary(problems=plan.problems)
    for problem in plan.problems:
        logger.warning("folder #%d: %s", problem.folder, problem.reason)
    state = process_state()  # under torchrun each rank analyses every N-th study
    for key in progress(shard(list(plan.studies), state)):
        outcome = StudyOutcome(key, plan.folders.get(key, []))
        try:
            found = infer_study(pipeline, plan.studies[key], output_dir, key)
            outcome.output, outcome.analysed, outcome.skipped, outcome.seconds = found[:4]
            outcome.dicom_files = found[4]
        except Exception as err:  # one study's failure is that study's; the batch goes on
            outcome.error = failure_reason(err)
            logger.error("study %s failed: %s", key, outcome.error)
            logger.debug("study %s traceback", key, exc_info=True)
        summary.studies.append(outcome)
        if on_study is not None:
            on_study(outcome)
    if state.num_processes > 1:
        shares = gather_shares(summary.studies, state)
        if shares is None:  # the main process writes the merged summary
            return from_main_process(summary, state)
        summary.studies = unshard(shares)
    write_summary(summary, output_dir)
    return from_main_process(summary, state)


def write_summary(summary: BatchSummary, output_dir: Path) -> Path:
    """``output_dir/summary.json``: studies by key, folder problems by folder index."""
    output_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "studies": [
            {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(s).items()
                if k != "dicom_files"
            }
            for s in summary.studies
        ],
        "folder_problems": [asdict(p) for p in summary.problems],
    }
    path = output_dir / "summary.json"
    path.write_text(json.dumps(doc, indent=2))
    return path
