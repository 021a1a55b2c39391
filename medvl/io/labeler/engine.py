"""Rule-based CheXpert-14 labels from radiology report text, with negation and uncertainty.

A report is labelled sentence by sentence. In each sentence the labeler finds *mentions* of each
finding (regular expressions from ``medvl/resources/labeler_rules.yaml``) and *cues*, then decides
what governs each mention:

* A **pre-cue** ("no", "without", "possible", "cannot exclude", ...) governs the mentions after it
  until a scope breaker ("but", "however", "which", "with", ...) or a clause word ("is", "are",
  "seen", ...) ends its scope, so "No pneumothorax or pleural effusion" negates both findings and
  "No pneumothorax, but small effusion" negates only the first.
* A **post-cue** ("is not seen", "has resolved", "appear within normal limits", "cannot be
  excluded", "?") governs a mention that
  precedes it by at most ``post_window`` words with no breaker or clause word in between.
* When several cues reach a mention, the nearest pre-cue and the nearest post-cue decide; if either
  is an uncertainty cue the mention is uncertain, else if either is a negation it is negated.
* A mention that is itself a clause ("the heart is enlarged") obeys only cues inside it ("the heart
  is not enlarged"), never a pre-cue outside it.
* Overlapping cues: the longer wins, and *pseudo* cues ("no change", "not well seen on prior",
  "to suggest") cancel the shorter cues they contain.

Values follow CheXpert: 1 present, 0 negated, -1 uncertain, ``None`` not mentioned. Across the
sentences of a report a finding takes the strongest value: present > uncertain > negated.
"No Finding" is 1 when no finding other than Support Devices is present or uncertain, else 0.
"likely", "probably" and "unlikely" are uncertainty cues, as in CheXpert. What the rules file
decides about IU-style phrasing (clear lungs, normal heart size, upper limits of normal) is listed
at its top.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medvl.findings import (
    CHEXPERT_14,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
)
from medvl.io.labeler.rules import LabelerRules, compile_patterns, find_spans
from medvl.io.reports import SECTION_NAMES, split_sections, split_sentences

__all__ = [
    "LABELLED_SECTIONS",
    "ReportLabeler",
    "SentenceLabel",
    "default_labeler",
    "label_report",
]

Label = int | None
LABELLED_SECTIONS: tuple[str, ...] = ("findings", "impression")
_CONTEXT_SECTIONS = frozenset(SECTION_NAMES) - set(LABELLED_SECTIONS)
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


@dataclass(frozen=True)
class SentenceLabel:
    """One labelled mention: why a finding got its value in one sentence."""

    sentence: str
    finding: str
    value: int
    mention: str
    cue: str | None = None


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    polarity: str  # "neg", "unc" or "pseudo"
    direction: str  # "pre" or "post"


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    base: int
    kind_rank: int  # uncertain phrase 2 > negative phrase 1 > synonym 0


# ----------------------------------------------------------------------------- labeler


class ReportLabeler:
    """Label report text with the CheXpert-14 observations.

    Parameters
    ----------
    rules
        Labeler rules; ``None`` loads the packaged defaults.
    """

    def __init__(self, rules: LabelerRules | None = None) -> None:
        self.rules = rules if rules is not None else LabelerRules.default()
        m, cues = self.rules.macros, self.rules.cues
        self._cue_regexes = [
            (compile_patterns(cues.negation_pre, m, "cues.negation_pre"), "neg", "pre"),
            (compile_patterns(cues.negation_post, m, "cues.negation_post"), "neg", "post"),
            (compile_patterns(cues.uncertainty_pre, m, "cues.uncertainty_pre"), "unc", "pre"),
            (compile_patterns(cues.uncertainty_post, m, "cues.uncertainty_post"), "unc", "post"),
            (compile_patterns(cues.pseudo, m, "cues.pseudo"), "pseudo", "pre"),
        ]
        self._breakers = compile_patterns(cues.scope_breakers, m, "cues.scope_breakers")
        self._clause = compile_patterns(cues.clause_words, m, "cues.clause_words")
        self._findings = {
            name: (
                compile_patterns(rule.synonyms, m, f"findings.{name}.synonyms"),
                compile_patterns(rule.negative_phrases, m, f"findings.{name}.negative_phrases"),
                compile_patterns(rule.uncertain_phrases, m, f"findings.{name}.uncertain_phrases"),
                compile_patterns(rule.exclusions, m, f"findings.{name}.exclusions"),
            )
            for name, rule in self.rules.findings.items()
        }

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReportLabeler:
        """A labeler with rules from a YAML file."""
        return cls(LabelerRules.from_yaml(path))

    # -- public API -------------------------------------------------------------------------

    def label(
        self, text: str, sections: Sequence[str] | None = LABELLED_SECTIONS
    ) -> dict[str, Label]:
        """CheXpert-14 labels of one report.

        Parameters
        ----------
        text
            Report text, with or without section headings.
        sections
            Sections to label (default findings and impression, so an indication such as "rule out
            pneumonia" is not read as a finding). A report that has none of them is labelled in
            full, minus its comparison, indication and technique sections. ``None`` labels the
            whole text.

        Returns
        -------
        dict
            Every name in :data:`medvl.findings.CHEXPERT_14` -> 1, 0, -1 or ``None``.
        """
        return self.aggregate(self.label_sentences(self.labelled_text(text, sections)))

    def label_sentences(self, text: str) -> list[SentenceLabel]:
        """Every mention in ``text``, sentence by sentence, with the cue that decided it."""
        out: list[SentenceLabel] = []
        for sentence in split_sentences(text):
            out.extend(self._label_sentence(sentence))
        return out

    @staticmethod
    def labelled_text(text: str, sections: Sequence[str] | None = LABELLED_SECTIONS) -> str:
        """The part of a report that :meth:`label` reads (see its ``sections`` parameter)."""
        if sections is None:
            return text
        parts = split_sections(text)
        chosen = [parts[s] for s in sections if s in parts]
        if not chosen:
            chosen = [v for k, v in parts.items() if k not in _CONTEXT_SECTIONS]
        return "\n".join(chosen)

    @staticmethod
    def aggregate(labels: Iterable[SentenceLabel]) -> dict[str, Label]:
        """Combine mention labels: present > uncertain > negated; then derive "No Finding"."""
        result: dict[str, Label] = dict.fromkeys(CHEXPERT_14)
        for item in labels:
            current = result[item.finding]
            if current is None or _RANK[item.value] > _RANK[current]:
                result[item.finding] = item.value
        pathology = (n for n in CHEXPERT_14 if n not in (NO_FINDING, SUPPORT_DEVICES))
        found = any(result[n] in (POSITIVE, UNCERTAIN) for n in pathology)
        result[NO_FINDING] = NEGATIVE if found else POSITIVE
        return result

    # -- one sentence -----------------------------------------------------------------------

    def _cues(self, sentence: str) -> list[_Cue]:
        found = [
            _Cue(s, e, polarity, direction)
            for regex, polarity, direction in self._cue_regexes
            for s, e in find_spans(regex, sentence)
        ]
        found.sort(key=lambda c: (c.start - c.end, c.start))
        kept: list[_Cue] = []
        for cue in found:
            clash = any(
                cue.start < k.end and k.start < cue.end and (cue.start, cue.end) != (k.start, k.end)
                for k in kept
            )
            if not clash:
                kept.append(cue)
        return [c for c in kept if c.polarity != "pseudo"]

    def _mentions(self, sentence: str, finding: str) -> list[_Mention]:
        synonyms, negative, uncertain, exclusions = self._findings[finding]
        excluded = find_spans(exclusions, sentence)
        found = [
            _Mention(s, e, base, rank)
            for regex, base, rank in (
                (uncertain, UNCERTAIN, 2),
                (negative, NEGATIVE, 1),
                (synonyms, POSITIVE, 0),
            )
            for s, e in find_spans(regex, sentence)
            if not any(xs <= s and e <= xe for xs, xe in excluded)
        ]
        found.sort(key=lambda m: (-m.kind_rank, m.start - m.end))
        kept: list[_Mention] = []
        for mention in found:
            if not any(mention.start < k.end and k.start < mention.end for k in kept):
                kept.append(mention)
        return sorted(kept, key=lambda m: m.start)

    @staticmethod
    def _has(regexes: list[re.Pattern[str]], text: str) -> bool:
        return any(rx.search(text) for rx in regexes)

    def _governing(self, sentence: str, mention: _Mention, cues: list[_Cue]) -> list[_Cue]:
        """The nearest pre-cue and the nearest post-cue whose scope reaches ``mention``."""
        is_clause = self._has(self._clause, sentence[mention.start : mention.end])
        inside = [c for c in cues if mention.start <= c.start and c.end <= mention.end]
        pre: _Cue | None = None
        post: _Cue | None = None
        if inside:
            pre = max(inside, key=lambda c: c.start)
        elif not is_clause:
            for cue in cues:
                if cue.direction != "pre" or cue.start >= mention.start:
                    continue
                gap = sentence[min(cue.end, mention.start) : mention.start]
                if self._has(self._breakers, gap) or self._has(self._clause, gap):
                    continue
                if pre is None or cue.start > pre.start:
                    pre = cue
        for cue in cues:
            if cue.direction != "post" or cue.start < mention.end:
                continue
            gap = sentence[mention.end : cue.start]
            if len(gap.split()) > self.rules.post_window:
                continue
            if self._has(self._breakers, gap) or self._has(self._clause, gap):
                continue
            if post is None or cue.start < post.start:
                post = cue
        return [c for c in (pre, post) if c is not None]

    def _label_sentence(self, sentence: str) -> list[SentenceLabel]:
        cues = self._cues(sentence)
        out: list[SentenceLabel] = []
        for finding in self._findings:
            for mention in self._mentions(sentence, finding):
                value, cue = self._decide(sentence, mention, cues)
                out.append(
                    SentenceLabel(
                        sentence=sentence,
                        finding=finding,
                        value=value,
                        mention=sentence[mention.start : mention.end],
                        cue=cue,
                    )
                )
        return out

    def _decide(self, sentence: str, mention: _Mention, cues: list[_Cue]) -> tuple[int, str | None]:
        """Value of one mention: uncertainty beats negation; phrases carry their own base."""
        if mention.base == NEGATIVE:
            return NEGATIVE, None
        governing = {c.polarity: c for c in self._governing(sentence, mention, cues)}
        for polarity, value in (("unc", UNCERTAIN), ("neg", NEGATIVE)):
            if polarity in governing:
                cue = governing[polarity]
                return value, sentence[cue.start : cue.end]
        return mention.base, None


@functools.lru_cache(maxsize=1)
def default_labeler() -> ReportLabeler:
    """The labeler with the packaged rules, built once per process."""
    return ReportLabeler()


def label_report(text: str) -> dict[str, Label]:
    """CheXpert-14 labels of one report with the default rules (see :meth:`ReportLabeler.label`)."""
    return default_labeler().label(text)
