"""torchxrayvision's 18-pathology head as a baseline on medvl's CheXpert findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.eval.metrics import classification_metrics
from medvl.findings import CHEXPERT_14, PLEURAL_EFFUSION
from medvl.models.xrv_baseline import XRV_TO_FINDINGS, load_xrv_baseline

NEVER_IN_XRV = ("No Finding", "Pleural Other", "Support Devices")


def _xrv_densenet(op_threshs: torch.Tensor | None) -> torch.nn.Module:
    import torchxrayvision as xrv

    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None, op_threshs=op_threshs)
    with torch.no_grad():
        model.classifier.bias.uniform_(-2, 2)  # spread the probabilities
    return model.eval()


@pytest.mark.slow
def test_baseline_is_xrvs_own_output_on_the_shared_findings(tmp_path: Path) -> None:
    import torchxrayvision as xrv

    thresholds = torch.rand(18, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    lesion = xrv.datasets.default_pathologies.index("Lung Lesion")
    thresholds[lesion] = float("nan")  # torchxrayvision's mark: not trained on Lung Lesion
    reference = _xrv_densenet(thresholds)
    path = tmp_path / "xrv.pt"
    torch.save(reference.state_dict(), path)
    baseline = load_xrv_baseline(path, image_size=64)
    assert set(baseline.missing) == {*NEVER_IN_XRV, "Lung Lesion"}
    assert baseline.findings == tuple(
        f for f in CHEXPERT_14 if f not in baseline.missing
    )  # CheXpert order, 10 findings
    assert len(baseline.findings) == 10

    gray = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    probs = baseline.predict_proba(gray)
    with torch.no_grad():
        own = reference(gray * 2048 - 1024)  # xrv.datasets.normalize(img * 255, 255)
    names = xrv.datasets.default_pathologies
    for column, finding in enumerate(baseline.findings):
        xrv_name = next(k for k, v in XRV_TO_FINDINGS.items() if v == finding)
        torch.testing.assert_close(
            probs[:, column], own[:, names.index(xrv_name)], atol=1e-5, rtol=0
        )
    assert torch.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()

    labels = np.tile([[1.0], [0.0]], (3, len(baseline.findings)))  # evaluate-style scoring
    metrics = classification_metrics(probs.numpy(), labels, baseline.findings)
    assert set(metrics["per_finding"]) == set(baseline.findings)


def test_without_operating_points_probabilities_are_the_sigmoid_of_xrvs_logits(tmp_path) -> None:
    reference = _xrv_densenet(None)
    path = tmp_path / "xrv_plain.pt"
    torch.save(reference.state_dict(), path)
    baseline = load_xrv_baseline(path, findings=[PLEURAL_EFFUSION, "No Finding"], image_size=32)
    assert baseline.findings == (PLEURAL_EFFUSION,) and baseline.missing == ("No Finding",)
    gray = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        logits = reference(gray * 2048 - 1024)[:, 7]  # "Effusion"
    torch.testing.assert_close(baseline(gray)[:, 0], torch.sigmoid(logits), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"findings \['Effusion'\] are not CheXpert findings"):
        load_xrv_baseline(path, findings=["Effusion"], image_size=32)
