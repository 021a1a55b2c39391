"""MeSH terms of the Indiana University reports mapped to CheXpert-14 labels.

The mapping table lives in ``medvl/resources/mesh_to_chexpert.yaml`` (its header documents the
matching rules and the closed-world choice); this module loads and applies it. A term is
``Descriptor/qualifier/...``; rules match on the descriptor and, optionally, on qualifiers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from medvl.data.records import Label
from medvl.findings import (
    CHEXPERT_14,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
)

MAPPING_RESOURCE = "mesh_to_chexpert.yaml"
PATHOLOGIES: tuple[str, ...] = tuple(f for f in CHEXPERT_14 if f != NO_FINDING)
NoFindingRule = Literal["normal", "chexpert"]
RULE_KEYS = frozenset({"term", "findings", "qualifiers", "exclude", "value"})


def split_term(term: str) -> tuple[str, tuple[str, ...]]:
    """``"Pleural Effusion/left/small"`` -> ``("pleural effusion", ("left", "small"))``.

    Both parts are lower-cased and stripped, so matching ignores the collection's mixed case
    (``Thoracic Vertebrae`` / ``Thoracic vertebrae``).
    """
    parts = [p.strip().lower() for p in term.split("/")]
    return parts[0], tuple(p for p in parts[1:] if p)


@dataclass(frozen=True)
class MeshRule:
    """One row of the mapping table: descriptor (+ qualifier conditions) -> findings."""

    term: str
    findings: tuple[str, ...]
    qualifiers: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    value: int = POSITIVE

    def matches(self, descriptor: str, qualifiers: Iterable[str]) -> bool:
        """Whether an occurrence ``descriptor/qualifiers`` falls under this rule."""
        present = set(qualifiers)
        if descriptor != self.term:
            return False
        if self.qualifiers and not (self.qualifiers & present):
            return False
        return not (self.exclude & present)


@dataclass
class MeshMapping:
    """The MeSH -> CheXpert-14 table with its normal / unindexed terms and unmapped reasons."""

    rules: list[MeshRule]
    normal_terms: frozenset[str] = frozenset({"normal"})
    unindexed_terms: frozenset[str] = frozenset({"no indexing"})
    uncertain_qualifiers: frozenset[str] = frozenset()
    unmapped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], where: str = "mapping") -> MeshMapping:
        """Build and validate from the YAML structure; errors name the rule and the problem."""

        def lower_set(key: str) -> frozenset[str]:
            return frozenset(str(v).strip().lower() for v in data.get(key, None) or ())  # type: ignore[union-attr]

        rules = []
        for i, raw in enumerate(data.get("rules") or []):  # type: ignore[union-attr]
            extra = set(raw) - RULE_KEYS
            if extra:  # e.g. an unquoted "Catheters, Indwelling" splits into two keys
                raise ValueError(f"{where}: rule {i} has unknown keys {sorted(map(str, extra))}")
            term = str(raw.get("term", "")).strip().lower()
            findings = tuple(raw.get("findings") or ())
            unknown = [f for f in findings if f not in PATHOLOGIES]
            if not term or not findings or unknown:
                raise ValueError(
                    f"{where}: rule {i} ({raw.get('term')!r}) needs a term and CheXpert findings;"
                    f" unknown findings: {unknown}"
                )
            value = int(raw.get("value", POSITIVE))
            if value not in (POSITIVE, UNCERTAIN):
                raise ValueError(f"{where}: rule {i} ({term!r}) value must be 1 or -1")
            rules.append(
                MeshRule(
                    term=term,
                    findings=findings,
                    qualifiers=frozenset(q.lower() for q in raw.get("qualifiers") or ()),
                    exclude=frozenset(q.lower() for q in raw.get("exclude") or ()),
                    value=value,
                )
            )
        unmapped = {str(k).strip().lower(): str(v) for k, v in (data.get("unmapped") or {}).items()}  # type: ignore[union-attr]
        empty = [k for k, v in unmapped.items() if not v.strip()]
        if empty:
            raise ValueError(f"{where}: unmapped terms need a reason: {empty}")
        return cls(
            rules=rules,
            normal_terms=lower_set("normal_terms"),
            unindexed_terms=lower_set("unindexed_terms"),
            uncertain_qualifiers=lower_set("uncertain_qualifiers"),
            unmapped=unmapped,
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> MeshMapping:
        """Load the packaged table, or a user's YAML file with the same structure."""
        if path is None:
            text = resources.files("medvl").joinpath(f"resources/{MAPPING_RESOURCE}").read_text()
            where = MAPPING_RESOURCE
        else:
            text, where = Path(path).read_text(), str(path)
        data = yaml.safe_load(text)
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a YAML mapping at the top level")
        return cls.from_dict(data, where)

    def findings_of(self, term: str) -> dict[str, int]:
        """Finding -> 1 / -1 for one MeSH term; empty when no rule matches."""
        descriptor, qualifiers = split_term(term)
        uncertain = bool(self.uncertain_qualifiers & set(qualifiers))
        out: dict[str, int] = {}
        for rule in self.rules:
            if rule.matches(descriptor, qualifiers):
                value = UNCERTAIN if uncertain else rule.value
                for finding in rule.findings:
                    out[finding] = max(out.get(finding, UNCERTAIN), value)
        return out

    def is_mapped(self, term: str) -> bool:
        """Whether any rule matches the term."""
        return bool(self.findings_of(term))

    def labels(
        self,
        terms: Iterable[str],
        closed_world: bool = True,
        no_finding: NoFindingRule = "normal",
    ) -> dict[str, Label]:
        """CheXpert-14 labels of one report from its MeSH major terms.

        ``closed_world=True`` labels unmapped pathologies 0 (IU indexers coded every abnormality
        they saw); ``False`` leaves them None. A report indexed "No Indexing" (or with no terms)
        gets no labels at all. No Finding is 1 only for reports whose sole term is "normal"
        (``no_finding="normal"``), or, by CheXpert's definition (``"chexpert"``), when no
        pathology other than Support Devices is positive or uncertain: what a text labeler
        derives, so the two can be compared.
        """
        terms = [t for t in terms if t.strip()]
        descriptors = {split_term(t)[0] for t in terms}
        if not terms or descriptors & self.unindexed_terms:
            return {}
        found: dict[str, int] = {}
        for term in terms:
            for finding, value in self.findings_of(term).items():
                found[finding] = max(found.get(finding, UNCERTAIN), value)
        absent: Label = NEGATIVE if closed_world else None
        labels: dict[str, Label] = {f: found.get(f, absent) for f in PATHOLOGIES}
        if no_finding == "chexpert":
            pathology = (f for f in PATHOLOGIES if f != SUPPORT_DEVICES)
            found_any = any(labels[f] in (POSITIVE, UNCERTAIN) for f in pathology)
            labels[NO_FINDING] = NEGATIVE if found_any else POSITIVE
        else:
            labels[NO_FINDING] = POSITIVE if descriptors <= self.normal_terms else NEGATIVE
        return {f: labels[f] for f in CHEXPERT_14}


@lru_cache(maxsize=1)
def default_mapping() -> MeshMapping:
    """The packaged mapping, loaded once per process."""
    return MeshMapping.load()


def descriptor_counts(term_lists: Iterable[Iterable[str]]) -> Counter[str]:
    """How often each (lower-cased) descriptor occurs across reports' MeSH term lists."""
    return Counter(split_term(t)[0] for terms in term_lists for t in terms if t.strip())
