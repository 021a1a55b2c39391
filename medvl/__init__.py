"""medvl: medical-imaging domain adaptation with radiology reports.

The public face: ``import medvl`` gives a notebook the entry points of every layer, each one
imported from its module on first use (PEP 562). ``import medvl`` and ``import medvl.io``
therefore stay fast and torch-free; only touching a name from ``data`` upwards pulls in what
that layer needs. The names, by layer (bottom to top):

- config and vocabulary: ``load_config``, ``save_config``, ``CHEXPERT_14``;
- ``io`` (no torch): ``read_dicom``, ``DicomReadError``, ``apply_window``, ``read_series``,
  report sections, the CheXpert-14 labeler, de-identification;
- ``data``: manifests (``Study``, ``read_manifest``), ingest, the phantom generator, the IU
  reports, mask folders, pair data;
- ``models``: ``create_aligner``, zero-shot prompts and classifier, the findings head, LoRA,
  SAM (``create_sam``, its embedding cache and prompts, ``SamSegmenter``);
- ``train``: ``pretrain``, ``finetune``, ``run_segment_finetune``, their configs, run logs;
- ``eval``: zero-shot evaluation, classification and segmentation metrics, overlays;
- ``infer``: ``InferencePipeline``, result export and schema, the DICOM listener.

Example (a phantom radiograph scored zero-shot by an untrained tiny aligner)::

    import torch
    import medvl

    manifest = medvl.generate_phantoms(2, "runs/tour", size=128, workers=1, progress=False)
    image = medvl.read_dicom(medvl.read_manifest(manifest, medvl.Study)[0].images[0].path)
    scorer = medvl.ZeroShotClassifier(medvl.create_aligner("tiny"), medvl.PromptBank.from_yaml())
    probs = scorer.predict_proba(torch.from_numpy(image.pixels)[None, None])  # (1, 14) findings
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_FACE: dict[str, str] = {
    # config and the findings vocabulary
    "load_config": "medvl.config",
    "save_config": "medvl.config",
    "CHEXPERT_14": "medvl.findings",
    # io: the outside world's files (no torch)
    "read_dicom": "medvl.io.dicom",
    "DicomReadError": "medvl.io.dicom_header",
    "apply_window": "medvl.io.windows",
    "CT_WINDOW_PRESETS": "medvl.io.windows",
    "read_series": "medvl.io.series",
    "list_series": "medvl.io.series",
    "split_sections": "medvl.io.reports",
    "clean_model_text": "medvl.io.reports",
    "label_report": "medvl.io.labeler",
    "default_labeler": "medvl.io.labeler",
    "label_reports": "medvl.io.labeler",
    "scrub_report_text": "medvl.io.deid",
    "scrub_dataset": "medvl.io.deid",
    # data: records and the tensors made from them
    "Study": "medvl.data.records",
    "read_manifest": "medvl.data.records",
    "study_pairs": "medvl.data.records",
    "ingest_directory": "medvl.data.ingest",
    "label_vector": "medvl.data.datasets",
    "PairDataConfig": "medvl.data.pairs",
    "PhantomConfig": "medvl.data.phantom.generate",
    "generate_phantoms": "medvl.data.phantom.generate",
    "load_truth": "medvl.data.phantom.generate",
    "load_iu": "medvl.data.sources.iu.xray",
    "read_gray": "medvl.data.sources.mask_folder",
    "read_mask": "medvl.data.sources.mask_folder",
    "CtExampleConfig": "medvl.data.ct_example",
    "write_ct_example": "medvl.data.ct_example",
    "load_ct_example": "medvl.data.ct_example",
    # models: modules, their factories and file formats
    "create_aligner": "medvl.models.aligner",
    "MedVLAligner": "medvl.models.aligner",
    "PromptBank": "medvl.models.zeroshot",
    "ZeroShotClassifier": "medvl.models.zeroshot",
    "FindingsClassifier": "medvl.models.classifier",
    "load_classifier": "medvl.models.classifier",
    "load_xrv_baseline": "medvl.models.xrv_baseline",
    "LoraConfig": "medvl.models.lora",
    "apply_lora": "medvl.models.lora",
    "count_parameters": "medvl.models.lora",
    "SamConfig": "medvl.models.sam.config",
    "create_sam": "medvl.models.sam.model",
    "build_sam": "medvl.models.sam.model",
    "SamSegmenter": "medvl.models.sam.predict",
    "PropagationStop": "medvl.models.sam.predict",
    "PromptConfig": "medvl.models.sam.prompts",
    "mask_box": "medvl.models.sam.geometry",
    "ArrayImageSource": "medvl.models.sam.cache",
    "encode_images": "medvl.models.sam.cache",
    "open_cache": "medvl.models.sam.cache",
    # train: loops on one engine
    "EngineConfig": "medvl.train.engine.config",
    "read_metrics": "medvl.train.engine.run_log",
    "pretrain": "medvl.train.pretrain.job",
    "PretrainConfig": "medvl.train.pretrain.job",
    "stage_dir": "medvl.train.pretrain.job",
    "StageConfig": "medvl.train.pretrain.stages",
    "finetune": "medvl.train.finetune.job",
    "FinetuneConfig": "medvl.train.finetune.job",
    "HeadConfig": "medvl.train.finetune.job",
    "FewShotConfig": "medvl.train.finetune.job",
    "run_segment_finetune": "medvl.train.segment",
    "SegmentConfig": "medvl.train.segment",
    "SegDataConfig": "medvl.train.segment",
    "SegEvalConfig": "medvl.train.segment",
    "CacheConfig": "medvl.train.segment",
    # eval: metrics, plots and evaluation jobs
    "run_zeroshot": "medvl.eval.jobs",
    "ZeroShotJob": "medvl.eval.jobs",
    "EvalDataConfig": "medvl.eval.jobs",
    "classification_metrics": "medvl.eval.metrics",
    "case_metrics": "medvl.eval.segmentation",
    "evaluate_volume": "medvl.eval.volume_eval",
    "overlay_panels": "medvl.eval.overlays",
    # infer: study in, JSON / DICOM SEG / DICOM SR out
    "InferConfig": "medvl.infer.pipeline",
    "InferencePipeline": "medvl.infer.pipeline",
    "export_study": "medvl.infer.export",
    "result_schema": "medvl.infer.json_result",
    "ListenerConfig": "medvl.infer.listener",
    "StudyListener": "medvl.infer.listener",
    "PipelineProcessor": "medvl.infer.listener.processor",
}

__all__ = ["__version__", *_FACE]


def __getattr__(name: str) -> Any:
    """Import a face name from its module on first use and keep it here.

    Raises
    ------
    AttributeError
        If ``name`` is not in the face.
    """
    if name not in _FACE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_FACE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's own names plus every face name, imported or not."""
    return sorted({*globals(), *__all__})
