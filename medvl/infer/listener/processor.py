"""The listener's study processor backed by a loaded :class:`InferencePipeline`."""

from __future__ import annotations

from pathlib import Path

from medvl.infer.export import export_study
from medvl.infer.pipeline import InferencePipeline
from medvl.infer.result import StudyResult


class PipelineProcessor:
    """Analyse a study's files with ``pipeline``; write JSON, SEG and SR as its config asks."""

    def __init__(self, pipeline: InferencePipeline) -> None:
        self.pipeline = pipeline

    def analyse(self, files: list[Path]) -> StudyResult:
        """Run the loaded models on the study's instance files."""
        return self.pipeline.run_study(files)

    def write(self, result: StudyResult, out_dir: Path) -> list[Path]:
        """Export into ``out_dir`` (result.json last); return the SEG and SR files."""
        config = self.pipeline.config
        return export_study(
            result,
            out_dir,
            write_seg=config.write_seg,
            write_sr=config.write_sr,
            include_identifiers=config.include_identifiers,
        )
