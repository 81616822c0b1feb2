"""A real Orthanc PACS with its DICOMweb plugin, for tests and benchmarks: started on a free 127.0.0.1 port with
a temporary configuration and storage, loaded through its REST API, stopped (and restarted on the same storage).

Orthanc and the plugin are Debian packages (`apt-get install -y orthanc orthanc-dicomweb`; `.ci/run` installs
them). `orthanc_missing()` says what is missing, so that tests can skip with one line (or fail where
RADRETRIEVE_REQUIRE_ORTHANC=1, as in CI).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

INSTALL_HINT = "apt-get install -y orthanc orthanc-dicomweb (Debian; .ci/run does this)"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")  # where the Debian packages put plugins
START_TIMEOUT_S = 60.0  # Orthanc itself starts in well under a second; a loaded 2-core machine is slower


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc")


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's shared library, or None."""
    for folder in PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if found:
            return found[0]
    return None


def orthanc_missing() -> str | None:
    """Why an Orthanc with DICOMweb cannot be started here (one line with how to install it), or None."""
    if orthanc_binary() is None:
        return f"no Orthanc on PATH: {INSTALL_HINT}"
    if dicomweb_plugin() is None:
        return f"no Orthanc DICOMweb plugin under {' or '.join(PLUGIN_DIRS)}: {INSTALL_HINT}"
    return None


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """One Orthanc process. `users`: {name: password} turns on HTTP basic authentication (RegisteredUsers)."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        missing = orthanc_missing()
        if missing:
            raise RuntimeError(missing)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._write_config()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """The source argument of `radretrieve index` for this server."""
        return f"dicomweb+{self.url}/dicom-web"

    def _write_config(self) -> None:
        config = {
            "Name": "radretrieve-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.port,
            "DicomServerEnabled": False,  # no DICOM network port: REST and DICOMweb only
            "RemoteAccessAllowed": False,  # answers 127.0.0.1 only
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "HttpThreadsCount": 8,
            "StorageCompression": False,  # files are served exactly as uploaded
            "SaveJobs": False,
            "Plugins": [str(dicomweb_plugin())],
            # metadata read from the stored files: every attribute the scan needs (slice geometry included)
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config, indent=1), encoding="utf-8")

    def _session(self) -> requests.Session:
        s = requests.Session()
        if self.users:
            s.auth = next(iter(self.users.items()))
        return s

    def start(self) -> None:
        """Start (or restart, on the same storage and port) and wait until the REST API answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.folder / "orthanc.log", "ab")  # handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [orthanc_binary(), str(self.folder / "orthanc.json")],  # type: ignore[list-item]
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        with self._session() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"Orthanc exited with {self.proc.returncode}; see {self.folder / 'orthanc.log'}")
                try:
                    if s.get(f"{self.url}/system", timeout=2).ok:
                        return
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S:.0f} s; see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def upload(self, files: list[Path]) -> list[str]:
        """POST each DICOM file to /instances; returns Orthanc's instance ids."""
        ids = []
        with self._session() as s:
            for path in files:
                r = s.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
                r.raise_for_status()
                ids.append(r.json()["ID"])
        return ids

    def upload_folder(self, folder: Path) -> list[str]:
        """Upload every file under `folder` (sorted)."""
        return self.upload(sorted(p for p in Path(folder).rglob("*") if p.is_file()))

    def series_count(self) -> int:
        with self._session() as s:
            return len(s.get(f"{self.url}/series", timeout=10).json())

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
