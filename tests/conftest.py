"""Shared fixtures: tiny models (random init, fixed seed). Sample data: tests/samples.py."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_thread_counts():
    """torch's and faiss's thread counts are process-wide: a test that builds an in-process web service sets them
    to 1, and a later test comparing in-process training with a CLI subprocess would then compare float sums
    taken in different orders. Every test gets back the counts it started with."""
    import faiss
    import torch

    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


@pytest.fixture(scope="session")
def tiny_model():
    from radretrieve import load_model

    return load_model("radclip-tiny", device="cpu")


# -- `radretrieve serve`: one indexed out dir and one running server for tests/test_serve*.py ------------------
@pytest.fixture(scope="session")
def serve_env(tmp_path_factory):
    from tests.serve_env import build_indexed_out_dir

    return build_indexed_out_dir(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def server(serve_env):
    """`radretrieve serve --index OUT` on a free 127.0.0.1 port (no token, where on)."""
    from tests.serve_env import Server

    srv = Server(serve_env["out"], serve_env["tmp"] / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def token_server(serve_env, tmp_path_factory):
    """Bound to 127.0.0.1 (the tests contact nothing else) with a token, two worker processes, --no-where, and
    one --allowed-host name."""
    from tests.serve_env import ALLOWED_HOST, TOKEN, Server

    tmp = tmp_path_factory.mktemp("token_server")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = ("--token-file", str(token_file), "--workers", "2", "--no-where", "--allowed-host", ALLOWED_HOST)
    srv = Server(serve_env["out"], tmp / "server.log", *args, token=TOKEN)
    yield srv
    srv.stop()


# -- the archive of the PACS tests (tests/pacs_files.py): one folder and its folder index per session ----------
@pytest.fixture(scope="session")
def ct_archive(tmp_path_factory):
    """Two CT series, pydicom's CT and RLE MR, as the folder a PACS serves (tests/test_dicomweb.py) or pushes
    (tests/test_listen.py). Read only."""
    from tests.pacs_files import write_ct_archive

    return write_ct_archive(tmp_path_factory.mktemp("ct-archive"))


@pytest.fixture(scope="session")
def ct_folder_rows(ct_archive, tiny_model, tmp_path_factory):
    """The rows of `ct_archive`'s folder index: what every PACS route to the same files must give."""
    from tests.pacs_files import folder_rows

    return folder_rows(ct_archive, tiny_model, tmp_path_factory.mktemp("ct-folder-out"))
