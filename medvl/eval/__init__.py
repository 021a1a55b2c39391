"""medvl.eval: metrics, plots and the evaluation jobs behind ``medvl zeroshot`` / ``evaluate``.

- :mod:`medvl.eval.metrics`: ``classification_metrics`` (per-finding and macro AUROC, AUPRC,
  F1 at a threshold, ECE; scikit-learn underneath), ``retrieval_metrics`` (R@1/5/10, median
  rank, both directions, optional ground-truth groups), ``expected_calibration_error``.
- :mod:`medvl.eval.plots`: ``roc_curves_png``, ``similarity_heatmap_png``,
  ``retrieval_examples_png``.
- :mod:`medvl.eval.embed`: embed a manifest split robustly (unreadable images recorded).
- :mod:`medvl.eval.jobs`: ``run_zeroshot`` and ``run_retrieval`` (what the CLI calls).
- :mod:`medvl.eval.segmentation`, :mod:`medvl.eval.overlays`: segmentation metrics and mask
  overlays for the SAM decoder.

Submodules are imported on use, so ``import medvl.eval.metrics`` does not pull in torch.
"""
