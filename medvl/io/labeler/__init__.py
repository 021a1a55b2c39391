"""Rule-based CheXpert-14 labels from radiology report text (no torch).

:mod:`.engine` labels one report (mentions, negation and uncertainty scope), :mod:`.rules`
loads and compiles the rules file (``medvl/resources/labeler_rules.yaml``), :mod:`.batch`
labels a CSV or folder of reports into the CheXpert labeler's CSV format.
"""

from medvl.io.labeler.batch import LabelConfig, label_reports, read_report_table
from medvl.io.labeler.engine import (
    LABELLED_SECTIONS,
    ReportLabeler,
    SentenceLabel,
    default_labeler,
    label_report,
)
from medvl.io.labeler.rules import CueRules, FindingRule, LabelerRules

__all__ = [
    "LABELLED_SECTIONS",
    "CueRules",
    "FindingRule",
    "LabelConfig",
    "LabelerRules",
    "ReportLabeler",
    "SentenceLabel",
    "default_labeler",
    "label_report",
    "label_reports",
    "read_report_table",
]
