"""Benchmark the report labeler against the Indiana University annotators' MeSH labels.

The 3,955 real IU chest X-ray reports ship inside torchxrayvision; 3,927 have findings or
impression text, and of those the ones indexed with MeSH terms (not "No Indexing") are scored.
The labeler reads findings + impression; the truth is the reports' MeSH major terms through
the project's MeSH -> CheXpert table (``medvl/resources/mesh_to_chexpert.yaml``, or any table
of the same structure given with ``--mapping``), closed world (an abnormality the indexers did
not code is absent), No Finding by CheXpert's definition (no pathology other than Support
Devices positive or uncertain).

A finding counts as present when its label is 1, on both sides: an uncertain label (-1: the
labeler's "possible pneumonia", MeSH's "Cardiomegaly/borderline") is not a positive. Scored over
12 findings: the CheXpert-14 less Enlarged Cardiomediastinum and Pleural Other, which the IU
indexers code too rarely to score. Prints per-finding precision / recall / F1, macro F1 and
reports/s of one process; ``--uncertain-positive`` also counts -1 as present on both sides.

The peer, measured in the same run on the same reports: NegEx as the maintained spaCy
component ``negspacy`` (``pip install -e ".[bench]"``) deciding negation for the same mention
spans (our rules' synonyms, per sentence). It has no uncertainty, size-qualifier or
post-modifier rules; the comparison says what our cue engine buys over it, and whether a
maintained NLP library would earn its weight as the engine. ``--no-peer`` skips it.

Usage::

    python bench/labeler.py                       # packaged rules and mapping
    python bench/labeler.py --rules my_rules.yaml --mapping other_mesh_table.yaml

Writes ``runs/bench/labeler.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from sklearn.metrics import precision_recall_fscore_support

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medvl.data.sources.iu.mesh import MeshMapping  # noqa: E402
from medvl.data.sources.iu.xray import read_iu_reports  # noqa: E402
from medvl.findings import (  # noqa: E402
    CHEXPERT_14,
    ENLARGED_CARDIOMEDIASTINUM,
    NO_FINDING,
    PLEURAL_OTHER,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
)
from medvl.io.labeler import LABELLED_SECTIONS, ReportLabeler  # noqa: E402
from medvl.io.labeler.rules import compile_patterns, find_spans  # noqa: E402
from medvl.io.reports import split_sentences  # noqa: E402

SCORED: tuple[str, ...] = tuple(
    f for f in CHEXPERT_14 if f not in (ENLARGED_CARDIOMEDIASTINUM, PLEURAL_OTHER)
)


class NegexPeer:
    """Our mention spans, negated or not by negspacy's NegEx (its clinical termset)."""

    def __init__(self, labeler: ReportLabeler) -> None:
        import spacy
        from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)

        rules = labeler.rules
        self.mentions = {
            name: (
                compile_patterns(rule.synonyms, rules.macros, name),
                compile_patterns(rule.exclusions, rules.macros, name),
            )
            for name, rule in rules.findings.items()
        }
        self.nlp = spacy.blank("en")
        self.sentencizer = self.nlp.add_pipe("sentencizer")
        self.negex = self.nlp.add_pipe("negex", config={"span_keys": list(self.mentions)})

    def label(self, text: str) -> dict[str, int | None]:
        result: dict[str, int | None] = dict.fromkeys(CHEXPERT_14)
        for sentence in split_sentences(text):
            doc = self.sentencizer(self.nlp.make_doc(sentence))
            for name, (synonyms, exclusions) in self.mentions.items():
                excluded = find_spans(exclusions, sentence)
                spans = [
                    doc.char_span(s, e, label=name, alignment_mode="expand")
                    for s, e in find_spans(synonyms, sentence)
                    if not any(xs <= s and e <= xe for xs, xe in excluded)
                ]
                doc.spans[name] = [span for span in spans if span is not None]
            self.negex(doc)
            for name in self.mentions:
                for span in doc.spans[name]:
                    value = 0 if span._.negex else POSITIVE
                    result[name] = max(value, result[name] if result[name] is not None else 0)
        found = any(
            result[f] == POSITIVE for f in CHEXPERT_14 if f not in (NO_FINDING, SUPPORT_DEVICES)
        )
        result[NO_FINDING] = 0 if found else POSITIVE
        return result


def score(
    scored: list[tuple[dict, dict]], present: tuple[int, ...]
) -> tuple[dict[str, dict[str, float]], float]:
    """Per-finding precision / recall / F1 / support, and the macro F1."""
    rows = {}
    for finding in SCORED:
        y_true = [t[finding] in present for t, _ in scored]
        y_pred = [p[finding] in present for _, p in scored]
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average="binary", zero_division=0
        )
        rows[finding] = {"precision": p, "recall": r, "f1": f, "support": sum(y_true)}
    return rows, sum(row["f1"] for row in rows.values()) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, help="NLMCXR_reports.tgz or a folder of XML")
    parser.add_argument("--rules", type=Path, help="labeler rules YAML (default: packaged)")
    parser.add_argument("--mapping", type=Path, help="MeSH -> CheXpert YAML (default: packaged)")
    parser.add_argument("--uncertain-positive", action="store_true", help="count -1 as present")
    parser.add_argument("--no-peer", action="store_true", help="skip the negspacy peer")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench/labeler.json")
    args = parser.parse_args()

    labeler = ReportLabeler.from_yaml(args.rules) if args.rules else ReportLabeler()
    mapping = MeshMapping.load(args.mapping)
    reports, _ = read_iu_reports(args.reports)
    texts = [
        "\n".join(r.sections[s] for s in LABELLED_SECTIONS if r.sections.get(s)) for r in reports
    ]
    kept = [(r, t) for r, t in zip(reports, texts, strict=True) if t.strip()]

    start = time.perf_counter()
    predicted = [labeler.label(text, sections=None) for _, text in kept]
    seconds = time.perf_counter() - start

    peer, peer_seconds = None, None
    if not args.no_peer and importlib.util.find_spec("negspacy") is None:
        print('negspacy is not installed (pip install -e ".[bench]"): no peer this run')
    elif not args.no_peer:
        negex = NegexPeer(labeler)
        start = time.perf_counter()
        peer = [negex.label(text) for _, text in kept]
        peer_seconds = time.perf_counter() - start

    truth = [mapping.labels(r.mesh_major, no_finding="chexpert") for r, _ in kept]
    indexed = [i for i, t in enumerate(truth) if t]
    present = (POSITIVE, UNCERTAIN) if args.uncertain_positive else (POSITIVE,)
    rows, macro = score([(truth[i], predicted[i]) for i in indexed], present)
    peer_rows, peer_macro = (
        score([(truth[i], peer[i]) for i in indexed], present) if peer else ({}, 0.0)
    )

    print(f"{len(kept)} reports with findings or impression, {len(indexed)} MeSH-indexed scored")
    print(f"{'finding':<20} {'P':>6} {'R':>6} {'F1':>6} {'support':>8} {'negex F1':>9}")
    for finding, row in sorted(rows.items(), key=lambda kv: kv[1]["f1"]):
        peer_f1 = f"{peer_rows[finding]['f1']:9.3f}" if peer_rows else ""
        print(
            f"{finding:<20} {row['precision']:6.3f} {row['recall']:6.3f} {row['f1']:6.3f}"
            f" {row['support']:8d} {peer_f1}"
        )
    print(f"macro F1 {macro:.3f}   min F1 {min(r['f1'] for r in rows.values()):.3f}")
    print(f"{len(kept) / seconds:.0f} reports/s (one process, {seconds:.2f} s)")
    if peer_seconds is not None:
        print(
            f"negspacy NegEx peer: macro F1 {peer_macro:.3f}, {len(kept) / peer_seconds:.0f}"
            f" reports/s; medvl / peer: F1 x{macro / peer_macro:.2f},"
            f" speed x{peer_seconds / seconds:.2f}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "reports": len(kept),
        "scored": len(indexed),
        "uncertain_positive": args.uncertain_positive,
        "macro_f1": macro,
        "reports_per_s": len(kept) / seconds,
        "findings": rows,
        "peer": None
        if peer_seconds is None
        else {
            "name": "negspacy NegEx",
            "macro_f1": peer_macro,
            "reports_per_s": len(kept) / peer_seconds,
            "findings": peer_rows,
        },
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
