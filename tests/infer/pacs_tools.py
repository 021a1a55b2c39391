"""Real DICOM tools for the ``pacs`` tests: dcmtk, dciodvfy, Orthanc and ``medvl listen``.

Everything runs on 127.0.0.1 with free ports, under the test's temporary folder, bounded in
time, and is stopped by the fixture that started it. A missing tool fails the test in CI
(``CI=true``) and skips it elsewhere with the apt command in the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest
from listener_net import free_port, wait

APT = "apt-get install -y dcmtk dicom3tools orthanc orthanc-dicomweb"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb
SBIN = ("/usr/sbin", "/usr/bin", "/usr/local/bin")


def tool(name: str) -> str:
    """The path of a real tool, or fail (CI) / skip (locally) naming the apt command."""
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None
    )
    if found:
        return found
    missing(name)


def missing(name: str) -> NoReturn:
    """Fail (CI) or skip (locally) because ``name`` is not installed, naming the apt command."""
    message = f"{name} is not installed; run: {APT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def medvl_exe() -> str:
    return str(Path(sys.executable).parent / "medvl")


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy reports for ``path``."""
    done = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [
        x for x in lines if x.startswith("Warning")
    ]


def storescu(port: int, files: list[Path], *options: str, ae: str = "MEDVL") -> subprocess.Popen:
    """Start dcmtk's storescu sending ``files`` to 127.0.0.1:port (returns the process).

    ``-R`` proposes only the files' own SOP classes: storescu's default list of 64 classes has
    no SEG or Comprehensive 3D SR once a compressed syntax doubles the contexts.
    """
    command = [
        tool("storescu"),
        "-R",
        "-aec",
        ae,
        "-aet",
        "SENDER",
        *options,
        "127.0.0.1",
        str(port),
    ]
    return subprocess.Popen(
        [*command, *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


class Storescp:
    """dcmtk's storescp as the forward destination, writing what arrives into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [tool("storescp"), "-aet", "PACS", "-od", str(folder), "+xa", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait(lambda: echo(self.port, "PACS"), 10), "storescp did not start"

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def echo(port: int, ae: str) -> bool:
    done = subprocess.run(
        [tool("echoscu"), "-aec", ae, "-to", "2", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=10,
    )
    return done.returncode == 0


class Listen:
    """``medvl listen`` as a subprocess, the way a hospital runs it."""

    def __init__(
        self,
        out: Path,
        models: tuple[Path, Path],
        forward: str | None,
        port: int | None = None,
        quiet: float = 1.0,
    ) -> None:
        self.out, self.port = out, port or free_port()
        aligner, sam = models
        command = [
            medvl_exe(), "listen", "--out", str(out), "--port", str(self.port),
            "--quiet-seconds", str(quiet), "--model", str(aligner), "--sam", str(sam),
            "eligibility.allow_missing_view=true", "device=cpu",
        ]  # fmt: skip
        if forward:
            command += ["--forward", forward]
        log = out.parent / f"listen-{self.port}-{time.monotonic_ns()}.log"
        self.log = open(log, "w")  # noqa: SIM115 (open for the process's lifetime)
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        ok = wait(lambda: self.proc.poll() is None and self._running(), 120)
        assert ok, f"medvl listen did not start: {self.output()}"

    def _running(self) -> bool:
        try:
            status = json.loads((self.out / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return status.get("running", False) and status.get("pid") == self.proc.pid

    def status(self) -> dict:
        return json.loads((self.out / "status.json").read_text())

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        return code, time.monotonic() - started

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Orthanc:
    """An Orthanc PACS on loopback with a temporary config and storage, knowing medvl.

    ``dicomweb=True`` loads the DICOMweb plugin: STOW-RS at ``self.dicomweb_url + "/studies"``.
    """

    def __init__(self, root: Path, medvl_port: int, dicomweb: bool = False) -> None:
        orthanc = tool("Orthanc")
        if dicomweb and not os.path.exists(DICOMWEB_PLUGIN):
            missing("orthanc-dicomweb")
        self.http, self.dicom = free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "medvl-test",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/", "EnableWado": False},
            "DicomModalities": {"medvl": ["MEDVL", "127.0.0.1", medvl_port]},
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = open(root / "orthanc.log", "w")  # noqa: SIM115 (the process's lifetime)
        self.proc = subprocess.Popen(
            [orthanc, str(root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        assert wait(self._up, 30), "Orthanc did not start"
        self.dicomweb_url = f"http://127.0.0.1:{self.http}/dicom-web"

    def _up(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes, content_type: str = "application/dicom"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", data=body, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
