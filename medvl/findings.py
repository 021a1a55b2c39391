"""The findings vocabulary shared by labeler, phantom generator, zero-shot and inference.

CheXpert-14 observations (Irvin et al., 2019) in their canonical spelling. Every module that
names a finding uses these constants, never a bare string.
"""

from __future__ import annotations

NO_FINDING = "No Finding"
ENLARGED_CARDIOMEDIASTINUM = "Enlarged Cardiomediastinum"
CARDIOMEGALY = "Cardiomegaly"
LUNG_LESION = "Lung Lesion"
LUNG_OPACITY = "Lung Opacity"
EDEMA = "Edema"
CONSOLIDATION = "Consolidation"
PNEUMONIA = "Pneumonia"
ATELECTASIS = "Atelectasis"
PNEUMOTHORAX = "Pneumothorax"
PLEURAL_EFFUSION = "Pleural Effusion"
PLEURAL_OTHER = "Pleural Other"
FRACTURE = "Fracture"
SUPPORT_DEVICES = "Support Devices"

CHEXPERT_14: tuple[str, ...] = (
    NO_FINDING,
    ENLARGED_CARDIOMEDIASTINUM,
    CARDIOMEGALY,
    LUNG_LESION,
    LUNG_OPACITY,
    EDEMA,
    CONSOLIDATION,
    PNEUMONIA,
    ATELECTASIS,
    PNEUMOTHORAX,
    PLEURAL_EFFUSION,
    PLEURAL_OTHER,
    FRACTURE,
    SUPPORT_DEVICES,
)

# Label values as CheXpert writes them; "not mentioned" is None (blank in CSV).
POSITIVE = 1
NEGATIVE = 0
UNCERTAIN = -1
