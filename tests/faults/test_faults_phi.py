"""No planted identifier reaches any output: logs, JSON, CSV, YAML, manifests or drawn PNG text.

Identifiers are planted where a hospital's data carries them: DICOM headers (name, MRN,
accession, birth date, physicians), folder and file names, and report text (sign-off names,
MRN, dates). The jobs run at tiny sizes on that data through the CLI: ingest, the CSV adapter,
pretrain (MLM on the reports + contrastive), finetune, zeroshot, evaluate, segment-finetune and
infer. Every file they write is searched, with two documented exceptions: a path to one of the
user's own input files (manifests and resolved configs must say where the data is) and DICOM
SEG/SR objects (DICOM requires the patient module there). Every string a PNG draws is recorded
from the figures as they are saved. The demo takes no user data (phantoms and the shipped,
de-identified IU reports), so nothing can be planted in it.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.records import Study, read_manifest
from medvl.findings import CHEXPERT_14

SECRETS = ("Jane", "Doe", "4455667", "ACC991122", "19400101", "03/04/2021", "Robert", "Smith")
PHI_FOLDER = "Doe_Jane_MRN4455667"
PLANTED_REPORT = (
    " Reviewed for Jane Doe (MRN 4455667) on 03/04/2021. Dictated by Robert Smith."
    " Dear Jane, call us."
)
BINARY = {".safetensors", ".pt", ".npy", ".npz", ".bin", ".dcm"}

runner = CliRunner()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning"),
]


def plant_corpus(phantoms: Path, root: Path) -> Path:
    """Copy phantom studies under PHI-named folders and files, plant headers, write the CSV."""
    studies = read_manifest(phantoms, Study)
    rows = []
    for k, study in enumerate(studies):
        image = study.images[0]
        folder = root / PHI_FOLDER / f"Jane_Doe_19400101_study{k}"
        folder.mkdir(parents=True)
        ds = pydicom.dcmread(image.path)
        ds.PatientName, ds.PatientID = "Doe^Jane", f"MRN4455667{k:02d}"
        ds.AccessionNumber, ds.PatientBirthDate = f"ACC991122{k:02d}", "19400101"
        ds.ReferringPhysicianName = "Smith^Robert"
        dicom = folder / f"Jane_Doe_{k}.dcm"
        ds.save_as(dicom)
        mask = next(iter(image.masks.values()))
        shutil.copy(mask, folder / "Jane_Doe_mask.png")
        labels = {f: ("" if study.labels.get(f) is None else study.labels[f]) for f in CHEXPERT_14}
        rows.append({
            "image": f"{PHI_FOLDER}/{folder.name}/{dicom.name}",
            "report": study.report_text + PLANTED_REPORT,
            "study": f"ACC991122{k:02d}",
            "patient": f"MRN4455667{k:02d}",
            "mask": f"{PHI_FOLDER}/{folder.name}/Jane_Doe_mask.png",
            **labels,
        })  # fmt: skip
    table = root / "Jane_Doe_reports.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def leaks(text: str, root: Path) -> list[str]:
    """Planted secrets in ``text`` once paths to the user's own input files are taken out."""
    text = re.sub(re.escape(str(root)) + r"[^\s\"',\]}]*", "<input path>", text)
    return [s for s in SECRETS if s in text]


def test_no_identifier_reaches_any_output(tmp_path, monkeypatch, caplog):
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from medvl.data.phantom import generate_phantoms

    drawn: list[str] = []
    savefig = Figure.savefig

    def recording(fig, *args, **kwargs):
        drawn.extend(t.get_text() for t in fig.findobj(Text))
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    root, out = tmp_path / "hospital", tmp_path / "out"
    root.mkdir()
    phantoms = generate_phantoms(30, tmp_path / "ph", seed=3, size=64, workers=1, progress=False)
    table = plant_corpus(phantoms, root)
    data, model = out / "data", out / "dapt" / "model"
    train = ["train.cpu=true", "train.progress=false", "train.tensorboard=false"]
    jobs = {
        "ingest": ["ingest", root, "--out", out / "ingest", "workers=1"],
        "adapter": ["data", "adapter", "csv", table, "--out", data, "study_col=study",
                    "patient_col=patient", "mask_col=mask", "structure=lungs"],
        "pretrain": ["pretrain", "model=tiny", f"output_dir={out / 'dapt'}",
                     f"stages=[{{kind: mlm, corpus: {data / 'studies.jsonl'}}}, "
                     f"{{kind: contrastive, data: {{manifest: {data / 'studies.jsonl'}}}}}]",
                     "train.max_steps=2", "train.batch_size=4", *train],
        "finetune": ["finetune", f"model={model}", "mode=linear_probe",
                     f"output_dir={out / 'finetune'}", f"data.manifest={data / 'studies.jsonl'}",
                     "train.max_steps=2", "train.batch_size=4", *train],
        "zeroshot": ["zeroshot", "-m", model, "-d", data / "studies.jsonl", "-o", out / "zs",
                     "data.split=train"],
        "evaluate": ["evaluate", "-m", model, "-d", data / "studies.jsonl", "-o", out / "ev",
                     "data.split=train"],
        "segment-finetune": ["segment-finetune", f"output_dir={out / 'sam'}",
                             "model.variant=tiny", "model.img_size=64", "data.source=manifest",
                             f"data.path={data / 'seg_samples.jsonl'}", "data.structures=[lungs]",
                             f"cache.dir={out / 'sam_cache'}", "train.max_steps=2",
                             "train.batch_size=4", "train.eval_every=0", *train],
        "infer": ["infer", root / PHI_FOLDER, "--studies", "--model", model, "--out",
                  out / "infer"],
    }  # fmt: skip
    failed: dict[str, str] = {}
    with caplog.at_level(logging.INFO):
        for name, args in jobs.items():
            result = runner.invoke(app, [str(a) for a in args])
            if result.exit_code != 0:
                failed[name] = result.stderr[-500:] or repr(result.exception)
            for stream in (result.stdout, result.stderr):
                assert not leaks(stream, root), (name, leaks(stream, root), stream[-2000:])
    assert not failed, failed
    assert not leaks(caplog.text, root), leaks(caplog.text, root)
    assert drawn, "no PNG was drawn"
    assert not leaks("\n".join(drawn), root), leaks("\n".join(drawn), root)
    scanned = 0
    for file in sorted(p for p in out.rglob("*") if p.is_file()):
        if file.suffix in BINARY:
            continue
        found = leaks(file.read_bytes().decode("latin-1"), root)
        assert not found, (file.relative_to(out), found)
        scanned += 1
    assert scanned > 20
    studies = read_manifest(data / "studies.jsonl", Study)
    assert all("[NAME]" in s.report_text for s in studies)  # scrubbed, not dropped
    assert json.loads((out / "ev" / "retrieval.json").read_text())["counts"]["images"] > 0
