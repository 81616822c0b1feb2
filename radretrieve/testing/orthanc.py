"""A real Orthanc PACS with its DICOMweb plugin, for tests and benchmarks: started on a free 127.0.0.1 port with
a temporary configuration and storage, loaded through its REST API, stopped (and restarted on the same storage).

Orthanc and the plugin are Debian packages (`apt-get install -y orthanc orthanc-dicomweb`; `.ci/run` installs
them). `orthanc_missing()` says what is missing, so that tests can skip with one line (or fail where
RADRETRIEVE_REQUIRE_ORTHANC=1, as in CI).

`Orthanc(folder, dicom=True)` also opens Orthanc's DICOM port (C-FIND, C-GET, C-MOVE) on a free port with its
own AE title (`aet`), and registers radretrieve's calling AE title as a modality at 127.0.0.1 with a free
port for C-MOVE (`move_port`): `dimse_url` is the `index` argument. Orthanc 1.10 has no option to bind its
DICOM port to one address, so it listens on every interface; it accepts associations only from the
registered modality (AE title and host 127.0.0.1: `DicomCheckModalityHost`) and only with its own called AE
title, and the port lives only as long as the test.
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


DIMSE_AET = "ORTHANCTEST"  # the called AE title of a test Orthanc
CALLING_AET = "RADRETRIEVE"  # the modality it knows (radretrieve's default calling AE title)
MODALITY = "radretrieve"  # that modality's name in Orthanc's configuration


class Orthanc:
    """One Orthanc process. `users`: {name: password} turns on HTTP basic authentication (RegisteredUsers);
    `dicom`: the DICOM port too (C-FIND, C-GET, C-MOVE to the `CALLING_AET` modality at `move_port`);
    `cache_mb`: Orthanc's storage cache (0: a test can make a stored file unreadable under it)."""

    def __init__(
        self,
        folder: Path,
        users: dict[str, str] | None = None,
        dicom: bool = False,
        aet: str = DIMSE_AET,
        cache_mb: int | None = None,
    ) -> None:
        missing = orthanc_missing()
        if missing:
            raise RuntimeError(missing)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.port = free_port()
        self.dicom, self.aet = dicom, aet
        self.cache_mb = cache_mb  # Orthanc's storage cache (None: its default; 0: every read hits the stored file)
        self.dicom_port = free_port() if dicom else 0
        self.move_port = free_port() if dicom else 0  # where radretrieve's storage SCP listens for C-MOVE
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

    @property
    def dimse_url(self) -> str:
        """The source argument of `radretrieve index` for this server's DICOM port (dicom=True)."""
        return f"dimse://{self.aet}@127.0.0.1:{self.dicom_port}"

    def _dicom_config(self) -> dict[str, object]:
        if not self.dicom:
            return {"DicomServerEnabled": False}  # no DICOM network port: REST and DICOMweb only
        always = {f"DicomAlwaysAllow{k}": False for k in ("Echo", "Store", "Find", "FindWorklist", "Get", "Move")}
        return {
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,  # a wrong called AE title is rejected
            "DicomCheckModalityHost": True,  # the modality only from its own host (127.0.0.1)
            **always,  # nothing for an AE title it does not know
            "DicomModalities": {MODALITY: self.modality()},
            "DicomAssociationCloseDelay": 0,  # C-MOVE: close its association to our SCP when done
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
        }

    def modality(self, aet: str = CALLING_AET, **allow: bool) -> dict[str, object]:
        """The entry of radretrieve's modality (`allow`: e.g. AllowGet=False)."""
        return {"AET": aet, "Host": "127.0.0.1", "Port": self.move_port, **allow}

    def set_modality(self, aet: str = CALLING_AET, **allow: bool) -> None:
        """Change radretrieve's modality while Orthanc runs (REST; e.g. another AE title: our associations are
        rejected from then on)."""
        with self._session() as s:
            s.put(f"{self.url}/modalities/{MODALITY}", json=self.modality(aet, **allow), timeout=10).raise_for_status()

    def kill(self) -> None:
        """SIGKILL: a node that is gone at once (no association closed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _write_config(self) -> None:
        config = {
            "Name": "radretrieve-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.port,
            **self._dicom_config(),
            **({} if self.cache_mb is None else {"MaximumStorageCacheSize": self.cache_mb}),
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

    def delete(self, ids: list[str]) -> None:
        """Remove instances (Orthanc's instance ids, as `upload` returns them)."""
        with self._session() as s:
            for orthanc_id in ids:
                s.delete(f"{self.url}/instances/{orthanc_id}", timeout=30).raise_for_status()

    def stored_file(self, orthanc_id: str) -> Path:
        """Where Orthanc keeps an instance's file (uncompressed storage: the file as uploaded)."""
        with self._session() as s:
            info = s.get(f"{self.url}/instances/{orthanc_id}/attachments/dicom/info", timeout=10).json()
        uuid = str(info["Uuid"])
        return self.folder / "storage" / uuid[:2] / uuid[2:4] / uuid

    def upload_folder(self, folder: Path) -> list[str]:
        """Upload every file under `folder` (sorted)."""
        return self.upload(sorted(p for p in Path(folder).rglob("*") if p.is_file()))

    def series_count(self) -> int:
        with self._session() as s:
            return len(s.get(f"{self.url}/series", timeout=10).json())

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, *exc: object) -> None:
        # Its storage is thrown away with the test's folder: nothing to shut down cleanly, and a clean stop
        # costs 2.5-3.5 s (Orthanc waits on its HTTP and DICOM server threads), a SIGKILL none.
        self.kill()
