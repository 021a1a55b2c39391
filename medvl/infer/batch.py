"""Study folders in, one result folder per study out: what ``medvl infer`` and the listener run.

:func:`infer_study` analyses one study with a loaded :class:`~medvl.infer.pipeline.
InferencePipeline` and writes ``<output_dir>/<study hash>/`` (``result.json`` + DICOM SEG and SR
as the pipeline's config asks); :func:`infer_folders` does it for many folders and sums up.
Folders are named by the hash of their StudyInstanceUID, never by the input folder's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medvl.infer.export import export_study

if TYPE_CHECKING:
    from medvl.infer.pipeline import InferencePipeline


@dataclass
class StudyOutcome:
    """What one study gave: where it was written, how many images were analysed or skipped."""

    folder: Path
    output: Path
    analysed: int
    skipped: int
    seconds: float
    dicom_files: list[Path] = field(default_factory=list)  # SEG and SR, for forwarding


@dataclass
class BatchSummary:
    """The outcomes of :func:`infer_folders`, in input order."""

    studies: list[StudyOutcome] = field(default_factory=list)

    @property
    def analysed(self) -> int:
        """Images analysed over all studies (0: nothing could be read; the CLI exits 1)."""
        return sum(study.analysed for study in self.studies)


def study_folders(root: Path, per_study: bool) -> list[Path]:
    """``root`` itself, or (``per_study``) its sub-folders sorted by name, one study each."""
    if not per_study:
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir())


def infer_study(pipeline: InferencePipeline, folder: Path, output_dir: Path) -> StudyOutcome:
    """Run ``pipeline`` on the study in ``folder`` and export it under ``output_dir``."""
    config = pipeline.config
    result = pipeline.run_study(folder)
    output = output_dir / result.study_uid_hash
    files = export_study(
        result,
        output,
        write_seg=config.write_seg,
        write_sr=config.write_sr,
        include_identifiers=config.include_identifiers,
    )
    return StudyOutcome(
        folder, output, len(result.images), len(result.skipped), result.seconds, files
    )


def infer_folders(
    pipeline: InferencePipeline,
    folders: Iterable[Path],
    output_dir: Path,
    on_study: Callable[[StudyOutcome], None] | None = None,
) -> BatchSummary:
    """Analyse and export every study folder in turn.

    Parameters
    ----------
    pipeline
        The loaded models and decision rules (loaded once, used for every study).
    folders
        Study folders (any depth each), e.g. from :func:`study_folders`; an iterable, so a
        progress bar can wrap it.
    output_dir
        Each study goes to ``output_dir/<study hash>/``.
    on_study
        Called after each study (the CLI prints a line per study from it).
    """
    summary = BatchSummary()
    for folder in folders:
        outcome = infer_study(pipeline, folder, output_dir)
        summary.studies.append(outcome)
        if on_study is not None:
            on_study(outcome)
    return summary
