"""Real `radretrieve serve` processes for the service and page tests, on free 127.0.0.1 ports.

`Server` runs `python -m radretrieve serve ...` as a user would, waits until `/api/health` answers, keeps the
server's stderr (its log) in a file, and stops it with SIGTERM (uvicorn's graceful shutdown). Only loopback
addresses are ever contacted.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0  # a loaded 2-core machine can take a while to import torch in two processes
TOKEN = "s3cret-token-for-the-serve-tests-0123456789"  # the token server's (tests/conftest.py)
ALLOWED_HOST = "search.hospital.example"  # the token server's --allowed-host
_ADDRESSES = itertools.count(1)


def fresh_address() -> str:
    """A loopback address no test of this session has sent from (127.1.0.1, 127.1.0.2, ...): failed credentials
    are throttled per client address, so each test that fails on purpose gets its own."""
    n = next(_ADDRESSES)
    return f"127.1.{n // 250}.{n % 250 + 1}"


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `radretrieve serve` subprocess; `url` is its base address, `log` its stderr."""

    def __init__(
        self, out_dir: Path, log: Path, *args: str, token: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.out_dir = Path(out_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        self.token = token
        cmd = [sys.executable, "-m", "radretrieve", "serve", "--index", str(out_dir), "--port", str(self.port), *args]
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def client(self, token: str | None = None, address: str | None = None, **kwargs) -> httpx.Client:
        """A client of the server; `address`: the loopback address to send from (see `fresh_address`)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if address is not None:
            kwargs["transport"] = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def _wait_ready(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {START_TIMEOUT_S:.0f} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log_file.close()


def build_indexed_out_dir(tmp: Path) -> dict:
    """A synthetic archive of 8 studies, indexed with radclip-tiny overfitted on it (as tests/test_search_cli)."""
    from indexers.build import build_indexes
    from pipelines.job import IndexOptions, index_archive
    from radretrieve import load_model
    from radretrieve.archive import scan
    from radretrieve.models.provenance import Provenance
    from radretrieve.models.reference import ModelSource
    from radretrieve.synth import synthesize
    from tests.test_search_cli import overfit_tiny

    arch, out = tmp / "arch", tmp / "out"
    synthesize(arch, studies=8, seed=0)
    result = scan(arch)
    items = list(result.items)
    trained = overfit_tiny(items, result.root)
    trained.source = ModelSource("path", str((tmp / "model").resolve()))
    # trained here, by the test's own loop: the served out dir is one of a trained model (no warning, no banner)
    trained.provenance = Provenance("trained", origin="overfit on the 8 synthetic studies (tests/serve_env.py)")
    trained.save(tmp / "model")
    model = load_model(str(tmp / "model"), device="cpu")
    # The search and serve tests compare hits with scan()'s sources and study keys: this out dir keeps paths.
    # Anonymised out dirs (the default) are searched and served in test_phi_pipeline.py.
    index_archive(arch, out, model, IndexOptions(workers=0, progress=False, anonymise_paths=False))
    build_indexes(out)
    return {"tmp": tmp, "arch": arch, "root": result.root, "out": out, "model": model, "items": items}
