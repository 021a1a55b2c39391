"""torchxrayvision's 18-pathology DenseNet head as a baseline findings classifier.

torchxrayvision names its outputs its own way (``Effusion``, ``Pleural_Thickening``, ...);
:data:`XRV_TO_FINDINGS` maps the ones CheXpert shares onto :mod:`medvl.findings` names, so a
baseline scores on the same columns as medvl's zero-shot and fine-tuned classifiers. A finding
is *missing*, never scored zero, when torchxrayvision has no output for it (``No Finding``,
``Pleural Other``, ``Support Devices``) or when the weights carry operating points and that
output's threshold is NaN (torchxrayvision's mark of a pathology the weights were not trained
on, e.g. ``Lung Lesion`` in the NIH model).

Probabilities are torchxrayvision's own: its operating-point normalisation when the weights
carry ``op_threshs``, else the sigmoid of its logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from medvl import findings as fnd
from medvl.models.towers.image import ImageTowerConfig
from medvl.models.towers.xrv import XrvDenseNetTower

XRV_TO_FINDINGS: dict[str, str] = {
    "Atelectasis": fnd.ATELECTASIS,
    "Consolidation": fnd.CONSOLIDATION,
    "Pneumothorax": fnd.PNEUMOTHORAX,
    "Edema": fnd.EDEMA,
    "Effusion": fnd.PLEURAL_EFFUSION,
    "Pneumonia": fnd.PNEUMONIA,
    "Cardiomegaly": fnd.CARDIOMEGALY,
    "Lung Lesion": fnd.LUNG_LESION,
    "Fracture": fnd.FRACTURE,
    "Lung Opacity": fnd.LUNG_OPACITY,
    "Enlarged Cardiomediastinum": fnd.ENLARGED_CARDIOMEDIASTINUM,
}


class XrvBaselineClassifier(nn.Module):
    """torchxrayvision's head on gray ``(B, 1, H, W)`` pixels in [0, 1], on medvl's findings.

    Attributes
    ----------
    findings
        The requested findings it scores, in request order (the columns of
        :meth:`predict_proba`).
    missing
        The requested findings it cannot score (see the module docstring).
    """

    def __init__(self, tower: XrvDenseNetTower, findings: Sequence[str] = fnd.CHEXPERT_14) -> None:
        super().__init__()
        unknown = [name for name in findings if name not in fnd.CHEXPERT_14]
        if unknown:
            raise ValueError(
                f"findings {unknown} are not CheXpert findings {list(fnd.CHEXPERT_14)}"
            )
        self.tower = tower
        thresholds = getattr(tower.model, "op_threshs", None)
        index = {}
        for i, name in enumerate(tower.pathologies):
            if name in XRV_TO_FINDINGS and not (
                thresholds is not None and torch.isnan(thresholds[i])
            ):
                index[XRV_TO_FINDINGS[name]] = i
        self.findings: tuple[str, ...] = tuple(name for name in findings if name in index)
        self.missing: tuple[str, ...] = tuple(name for name in findings if name not in index)
        self.register_buffer(
            "columns", torch.tensor([index[name] for name in self.findings], dtype=torch.long)
        )

    def forward(self, pixels: Tensor) -> Tensor:
        """Probabilities ``(B, len(findings))``."""
        return self.predict_proba(pixels)

    @torch.no_grad()
    def predict_proba(self, pixels: Tensor) -> Tensor:
        """Probabilities ``(B, len(findings))`` (torchxrayvision's, see the module docstring)."""
        out = self.tower.pathology_probs(pixels)
        if getattr(self.tower.model, "op_threshs", None) is None:
            out = torch.sigmoid(out)
        return out[:, self.columns].cpu()


def load_xrv_baseline(
    weights: str | Path | None, findings: Sequence[str] = fnd.CHEXPERT_14, image_size: int = 224
) -> XrvBaselineClassifier:
    """A baseline classifier from torchxrayvision DenseNet weights (a state dict, with or
    without ``op_threshs``, or a pickled model); ``None`` builds random weights (tests)."""
    config = ImageTowerConfig(
        arch="xrv_densenet",
        pretrained=None if weights is None else str(weights),
        image_size=image_size,
    )
    return XrvBaselineClassifier(XrvDenseNetTower(config), findings).eval()
