"""What a phantom radiograph must show, decided from its paired report.

The plan is built from the report's CheXpert-14 labels; the MeSH terms behind the labels (IU
reports) or, failing those, the report sentences that mention a finding give its side, zone,
severity and kind ("Pleural Effusion/left/small", "Calcified Granuloma/lung/upper lobe/right",
"a large right pneumothorax"). Rules:

* positive (1) findings are always drawn; negated (0) and unmentioned (None) never;
* uncertain (-1) findings are drawn with probability :data:`UNCERTAIN_DRAW_P` at reduced
  conspicuity; whether they were drawn is recorded in the truth file, so a model can be scored
  against what the pixels show as well as against what the report says;
* every drawn finding gets a random conspicuity (contrast and size scale), so some are subtle;
* a few frequent non-CheXpert MeSH findings are drawn too, as ``extras`` (calcified granulomas,
  surgical clips / sternotomy wires, low or high lung volumes, an elevated hemidiaphragm): they
  make the pixels say what the report says without touching the CheXpert labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from medvl.data.records import Study
from medvl.data.sources.iu.mesh import default_mapping, split_term
from medvl.findings import (
    ATELECTASIS,
    CARDIOMEGALY,
    CHEXPERT_14,
    CONSOLIDATION,
    EDEMA,
    ENLARGED_CARDIOMEDIASTINUM,
    FRACTURE,
    LUNG_LESION,
    LUNG_OPACITY,
    NO_FINDING,
    PLEURAL_EFFUSION,
    PLEURAL_OTHER,
    PNEUMONIA,
    PNEUMOTHORAX,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
)
from medvl.io.reports import split_sentences

RIGHT, LEFT = 0, 1
UNCERTAIN_DRAW_P = 0.5
DRAWABLE: tuple[str, ...] = tuple(f for f in CHEXPERT_14 if f != NO_FINDING)
EXTRAS = ("calcified_granuloma", "surgical_hardware", "low_volumes", "hyperinflation")
EXTRA_TERMS = {
    "calcified granuloma": "calcified_granuloma",
    "granuloma": "calcified_granuloma",
    "granulomatous disease": "calcified_granuloma",
    "surgical instruments": "surgical_hardware",
}
SEVERITY_WORDS = (
    (("trace", "tiny", "minimal", "mild", "small", "slight", "borderline", "minimally"), 0.25),
    (("moderate", "moderately", "medium"), 0.55),
    (("large", "severe", "marked", "extensive", "massive", "prominent", "significant"), 0.85),
)
ZONE_WORDS = (
    (
        (
            "base",
            "bases",
            "basilar",
            "lower lobe",
            "lower",
            "basal",
            "retrocardiac",
            "costophrenic",
        ),
        "lower",
    ),
    (("middle lobe", "lingula", "middle", "hilum", "hilar", "perihilar", "mid lung"), "middle"),
    (("apex", "apices", "apical", "upper lobe", "upper"), "upper"),
)
MENTIONS = {
    ENLARGED_CARDIOMEDIASTINUM: ("mediastin",),
    CARDIOMEGALY: (
        "cardiomegaly",
        "heart size",
        "cardiac silhouette",
        "enlarged heart",
        "cardiac shadow",
    ),
    LUNG_LESION: ("nodul", "mass", "lesion", "tumor", "neoplasm", "cavit"),
    LUNG_OPACITY: ("opaci", "infiltrat", "density", "airspace", "scar", "interstitial"),
    EDEMA: ("edema", "congestion", "heart failure", "chf"),
    CONSOLIDATION: ("consolidat",),
    PNEUMONIA: ("pneumonia", "infection"),
    ATELECTASIS: ("atelecta",),
    PNEUMOTHORAX: ("pneumothora",),
    PLEURAL_EFFUSION: ("effusion",),
    PLEURAL_OTHER: ("pleural thickening", "pleural scar", "thickening", "fibrothorax"),
    FRACTURE: ("fracture",),
    SUPPORT_DEVICES: (
        "catheter",
        "tube",
        "line",
        "pacemaker",
        "pacer",
        "device",
        "port",
        "stent",
        "defibrillator",
    ),
}
DEVICE_KINDS = (
    (
        ("pacemaker", "pacer", "defibrillator", "icd", "implanted medical device", "generator"),
        "pacemaker",
    ),
    (
        ("endotracheal", "et tube", "tracheostomy", "nasogastric", "ng tube", "tube", "drain"),
        "tube",
    ),
    (("catheter", "picc", "line", "port", "central venous"), "line"),
    (("stent",), "stent"),
)


@dataclass
class FindingSpec:
    """One finding to draw: where, how big, how visible, and why."""

    finding: str
    sides: tuple[int, ...]
    severity: float  # 0..1 size scale (mild 0.25, moderate 0.55, large 0.85)
    conspicuity: float  # 0..1 contrast scale; uncertain findings are drawn fainter
    zone: str = ""  # "upper" | "middle" | "lower" | "" (anywhere)
    kind: str = ""  # nodule / mass; pacemaker / line / tube / stent; ...
    count: int = 1
    uncertain: bool = False

    def to_dict(self) -> dict:
        """JSON-ready form for the truth file (sides as words)."""
        return {
            "finding": self.finding,
            "sides": ["right" if s == RIGHT else "left" for s in self.sides],
            "severity": round(self.severity, 3),
            "conspicuity": round(self.conspicuity, 3),
            "zone": self.zone,
            "kind": self.kind,
            "count": self.count,
            "uncertain": self.uncertain,
        }


@dataclass
class PhantomPlan:
    """Everything the renderer needs to know about one phantom study."""

    findings: list[FindingSpec] = field(default_factory=list)
    extras: list[FindingSpec] = field(default_factory=list)
    ctr: float = 0.45
    uncertain_not_drawn: list[str] = field(default_factory=list)

    def get(self, finding: str) -> FindingSpec | None:
        """The spec of a drawn finding (or extra), or None."""
        for spec in (*self.findings, *self.extras):
            if spec.finding == finding:
                return spec
        return None

    @property
    def drawn(self) -> list[str]:
        """The CheXpert findings the pixels show."""
        return [spec.finding for spec in self.findings]


def _words(texts: list[str], table, default):
    for words, value in table:
        if any(re.search(rf"\b{re.escape(w)}", t) for t in texts for w in words):  # stems
            return value
    return default


def _sides(texts: list[str]) -> tuple[int, ...] | None:
    joined = " ".join(texts)
    if re.search(r"\b(bilateral|bilaterally|both|bibasilar|bibasal)\b", joined):
        return (RIGHT, LEFT)
    right, left = re.search(r"\bright\b", joined), re.search(r"\bleft\b", joined)
    if right and left:
        return (RIGHT, LEFT)
    if right or left:
        return (RIGHT,) if right else (LEFT,)
    return None


def _evidence(study: Study) -> dict[str, list[str]]:
    """Per finding, the lower-cased MeSH terms (descriptor + qualifiers) or sentences naming it."""
    mapping = default_mapping()
    found: dict[str, list[str]] = {}
    for term in study.mesh:
        descriptor, qualifiers = split_term(term)
        text = " ".join((descriptor, *qualifiers))
        for finding in mapping.findings_of(term):
            found.setdefault(finding, []).append(text)
        extra = EXTRA_TERMS.get(descriptor)
        if extra:
            found.setdefault(extra, []).append(text)
        if descriptor == "lung" and {"hypoinflation", "hyperdistention"} & set(qualifiers):
            found.setdefault(
                "low_volumes" if "hypoinflation" in qualifiers else "hyperinflation", []
            ).append(text)
    if not study.mesh:
        sentences = [s.lower() for s in split_sentences(study.model_text or study.report_text)]
        for finding, stems in MENTIONS.items():
            hits = [s for s in sentences if any(stem in s for stem in stems)]
            if hits:
                found[finding] = hits
    return found


def _spec(finding: str, texts: list[str], rng: np.random.Generator, uncertain: bool) -> FindingSpec:
    severity = _words(texts, SEVERITY_WORDS, None)
    severity = (
        rng.uniform(0.3, 0.75)
        if severity is None
        else float(np.clip(severity + rng.normal(0, 0.07), 0.1, 1.0))
    )
    sides = _sides(texts)
    if sides is None:
        both = finding in (EDEMA,) or (finding == PLEURAL_EFFUSION and rng.random() < 0.35)
        sides = (RIGHT, LEFT) if both else (int(rng.integers(2)),)
    conspicuity = rng.uniform(0.35, 1.0) * (0.6 if uncertain else 1.0)
    zone = _words(texts, ZONE_WORDS, "")
    kind, count = "", 1
    joined = " ".join(texts)
    if finding == LUNG_LESION:
        kind = "mass" if "mass" in joined else "nodule"
        count = int(rng.integers(2, 5)) if re.search(r"multiple|nodules|masses", joined) else 1
    elif finding == "calcified_granuloma":
        kind = "granuloma"
        count = int(rng.integers(2, 6)) if re.search(r"multiple|granulomas|disease", joined) else 1
    elif finding == SUPPORT_DEVICES:
        kind = _words(texts, DEVICE_KINDS, str(rng.choice(["pacemaker", "line", "tube"])))
    elif finding == "surgical_hardware":
        kind = "wires" if re.search(r"mediastin|sternotomy|sternum|wire", joined) else "clips"
    elif finding in (CONSOLIDATION, PNEUMONIA, LUNG_OPACITY, ATELECTASIS) and not zone:
        zone = str(rng.choice(["upper", "middle", "lower", "lower"]))
    return FindingSpec(
        finding, tuple(sorted(sides)), severity, conspicuity, zone, kind, count, uncertain
    )


def plan_study(study: Study, rng: np.random.Generator) -> PhantomPlan:
    """Decide what to draw for one report (see the module docstring for the rules)."""
    evidence = _evidence(study)
    plan = PhantomPlan()
    for finding in DRAWABLE:
        value = study.labels.get(finding)
        if value == UNCERTAIN and rng.random() >= UNCERTAIN_DRAW_P:
            plan.uncertain_not_drawn.append(finding)
            continue
        if value in (POSITIVE, UNCERTAIN):
            plan.findings.append(_spec(finding, evidence.get(finding, []), rng, value == UNCERTAIN))
    for extra in EXTRAS:
        if extra in evidence:
            plan.extras.append(_spec(extra, evidence[extra], rng, False))
    cardio = plan.get(CARDIOMEGALY)
    if cardio is None:
        plan.ctr = float(rng.uniform(0.40, 0.485))
    else:
        low = 0.51 if cardio.uncertain else 0.52
        plan.ctr = float(np.clip(low + cardio.severity * rng.uniform(0.1, 0.18), low, 0.68))
    return plan
