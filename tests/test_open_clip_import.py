"""open_clip is imported without `transformers` by the `radretrieve` command when the model has no Hugging Face
text tower (radretrieve.models.open_clip_import): about a second of every such process's start-up. A Python
program that imports radretrieve gets open_clip as it is. Checked in fresh interpreters (this one imported both
long ago); a model with such a tower loaded after one without it, in one lean process, is checked in
tests/test_models_pull_biomedclip.py."""

from __future__ import annotations

import subprocess
import sys

from radretrieve.synth import synthesize

LIBRARY = """
import sys
from radretrieve.models.loading import load_model
model = load_model(sys.argv[1], device="cpu", warn=False)
print("transformers" in sys.modules, model.fingerprint)
"""


def _imported(stderr: str) -> set[str]:
    """Module names in `python -X importtime` output."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_the_command_imports_no_transformers_for_a_model_without_a_hugging_face_tower(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "model")
    library = subprocess.run(
        [sys.executable, "-c", LIBRARY, str(tmp_path / "model")], capture_output=True, text=True, timeout=240
    )
    assert library.returncode == 0, library.stderr[-3000:]
    assert library.stdout.split() == ["True", tiny_model.fingerprint]  # open_clip as it is: it imports transformers
    synthesize(tmp_path / "archive", studies=2, seed=3)
    cmd = [sys.executable, "-X", "importtime", "-m", "radretrieve", "index", str(tmp_path / "archive")]
    cmd += ["--out", str(tmp_path / "out"), "--model", str(tmp_path / "model"), "--no-index", "-q", "--workers", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = _imported(proc.stderr)
    assert "open_clip" in modules and "torch" in modules
    # open_clip's attempt shows as a line of a few microseconds; an import that happened loads its submodules
    assert not [m for m in modules if m.startswith("transformers.")]
