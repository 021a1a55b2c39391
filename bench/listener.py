"""Benchmark ``medvl listen`` as a hospital runs it, against dcmtk's storescp in the same run.

Starts ``medvl listen`` (a subprocess, tiny random models: the figures measure the listener's
machinery, not a model) forwarding to a pynetdicom destination on loopback, then measures:

- latency: last C-STORE acknowledged -> last result object (SR) received, minus the quiet
  period, median and p95 over ``--studies`` studies sent one after another;
- throughput: studies per minute with ``--senders`` concurrent senders, from the first C-STORE
  to the last result received; the peer is dcmtk ``storescp`` receiving the same studies
  (store only, no analysis), measured in the same run, so the ratio is the cost of analysis;
- memory: the listener's resident set size after 20, 100 and ``--memory-studies`` studies.

Usage::

    python bench/listener.py                        # 20 studies, 4 senders, 200 for memory
    python bench/listener.py --memory-studies 0     # skip the memory run

Prints a table and writes ``runs/bench/listener.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

from medvl.models.aligner import create_aligner
from medvl.models.sam import SamConfig, build_sam


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _study(images: int, size: int, seed: int) -> list[Dataset]:
    """``images`` frontal CR radiographs of one new study."""
    rng = np.random.default_rng(seed)
    study, out = generate_uid(), []
    for k in range(images):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ComputedRadiographyImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "Bench^Patient", "B1", "", ""
        ds.Modality, ds.ViewPosition, ds.PatientOrientation = "CR", ("PA", "AP")[k % 2], ["L", "F"]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelSpacing = [0.2, 0.2]
        ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
        out.append(ds)
    return out


class Destination:
    """The PACS the listener forwards to: records when each study's SR arrives."""

    def __init__(self) -> None:
        self.port, self.sr_times, self.objects = _port(), {}, 0
        self.lock = threading.Lock()
        ae = AE(ae_title="PACS")
        for sop_class in (SegmentationStorage, Comprehensive3DSRStorage):
            ae.add_supported_context(sop_class)

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            with self.lock:
                self.objects += 1
                if ds.SOPClassUID == Comprehensive3DSRStorage:
                    self.sr_times[str(ds.StudyInstanceUID)] = time.monotonic()
            return 0

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )


def _send(port: int, ae_title: str, datasets: list[Dataset]) -> float:
    """C-STORE ``datasets`` on one association; the time the last one was acknowledged."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(ComputedRadiographyImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"association to {ae_title} at port {port} failed")
    for ds in datasets:
        status = assoc.send_c_store(ds)
        if getattr(status, "Status", None) != 0:
            raise RuntimeError("C-STORE failed")
    done = time.monotonic()
    assoc.release()
    return done


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the listener did not deliver in time")
        time.sleep(0.01)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _parallel(port: int, ae_title: str, studies: list[list[Dataset]], senders: int) -> float:
    """Send ``studies`` over ``senders`` threads; return the start time."""
    queue = list(studies)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                study = queue.pop()
            _send(port, ae_title, study)

    threads = [threading.Thread(target=worker) for _ in range(senders)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start


def _storescp_rate(studies: list[list[Dataset]], senders: int, root: Path) -> float | None:
    """Studies per minute dcmtk's storescp takes in (store only), or None without dcmtk."""
    program = shutil.which("storescp")
    if program is None:
        return None
    port = _port()
    out = root / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        [program, "-aet", "PEER", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        start = _parallel(port, "PEER", studies, senders)
        return len(studies) / ((time.monotonic() - start) / 60)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--images", type=int, default=2, help="radiographs per study")
    parser.add_argument("--size", type=int, default=512, help="rows = columns")
    parser.add_argument("--quiet", type=float, default=0.5, help="quiet period (s)")
    parser.add_argument("--memory-studies", type=int, default=200)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="medvl-bench-listener-"))
    create_aligner("tiny").save_pretrained(root / "aligner")
    build_sam(SamConfig(variant="tiny")).save_pretrained(root / "sam")
    dest = Destination()
    port = _port()
    command = [
        str(Path(sys.executable).parent / "medvl"), "listen", "--out", str(root / "out"),
        "--port", str(port), "--quiet-seconds", str(args.quiet), "--forward",
        f"PACS@127.0.0.1:{dest.port}", "--model", str(root / "aligner"), "--sam",
        str(root / "sam"), "--retention", "delete", "device=cpu",
    ]  # fmt: skip
    log = open(root / "listen.log", "w")  # noqa: SIM115 (the process's lifetime)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: (root / "out" / "status.json").is_file(), 180)
        latencies = []
        for i in range(args.studies):
            study = _study(args.images, args.size, seed=i)
            uid = str(study[0].StudyInstanceUID)
            acked = _send(port, "MEDVL", study)
            _wait(lambda uid=uid: uid in dest.sr_times, 120)
            latencies.append(dest.sr_times[uid] - acked - args.quiet)
        batch = [_study(args.images, args.size, seed=1000 + i) for i in range(args.studies)]
        uids = {str(s[0].StudyInstanceUID) for s in batch}
        start = _parallel(port, "MEDVL", batch, args.senders)
        _wait(lambda: uids <= set(dest.sr_times), 600)
        end = max(dest.sr_times[u] for u in uids)
        rate = len(batch) / ((end - start) / 60)
        done = 2 * args.studies
        memory = {str(done): round(_rss_mib(proc.pid), 1)}
        checkpoints = [c for c in (100, args.memory_studies) if args.memory_studies and c > done]
        for checkpoint in sorted(set(checkpoints)):
            while done < checkpoint:
                study = _study(args.images, args.size, seed=5000 + done)
                uid = str(study[0].StudyInstanceUID)
                _send(port, "MEDVL", study)
                _wait(lambda uid=uid: uid in dest.sr_times, 120)
                done += 1
            memory[str(done)] = round(_rss_mib(proc.pid), 1)
        status = json.loads((root / "out" / "status.json").read_text())
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(30)
        stop_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        dest.server.shutdown()
    peer = _storescp_rate(batch, args.senders, root)
    quantiles = statistics.quantiles(latencies, n=20)
    report = {
        "studies": args.studies,
        "images_per_study": args.images,
        "size": args.size,
        "quiet_s": args.quiet,
        "latency_median_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(quantiles[18], 3),
        "studies_per_min": round(rate, 1),
        "senders": args.senders,
        "storescp_studies_per_min": round(peer, 1) if peer else None,
        "ratio_vs_storescp": round(rate / peer, 3) if peer else None,
        "rss_mib": memory,
        "studies_done": status["studies_done"],
        "studies_failed": status["studies_failed"],
        "sigterm_exit": code,
        "sigterm_seconds": round(stop_s, 2),
    }
    print(f"{'figure':<42}{'value':>14}")
    for key, value in report.items():
        print(f"{key:<42}{json.dumps(value):>14}")
    out = Path("runs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "listener.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
