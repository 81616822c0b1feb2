"""open_clip, imported without `transformers` in radretrieve's own processes when the model does not need it.

open_clip imports `transformers` whenever it is installed (about 1.3 s of a CLI process's start-up on a 2-core
machine), but uses it only for a Hugging Face text tower (BiomedCLIP's BERT: `hf_model_name` in the config's
text tower) and its tokenizer. In a process that called `import_lean` (the `radretrieve` command, a Ray encoder
actor), `import_open_clip(hf_text=False)` imports open_clip with `transformers` made unimportable for the length
of that one import (Python's documented `sys.modules[name] = None`), so open_clip records it as absent;
`transformers` itself stays importable. A model with a Hugging Face text tower built later in the same process
asks `import_open_clip(hf_text=True)`, which runs open_clip's module for those towers again, this time with
`transformers` (docs/guide/speed.md, "Start-up").
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

HF_MODULE = "open_clip.hf_model"  # open_clip's module that imports transformers, for Hugging Face text towers
_state = {"lean": False}  # set by `import_lean`


def import_lean() -> None:
    """Let `import_open_clip` leave `transformers` out in this process. Called only where radretrieve owns the
    whole process and loads one model on one thread: the `radretrieve` command (`python -m radretrieve` too) and
    a Ray encoder actor. A Python program that imports radretrieve gets open_clip as it is, so that it can build
    open_clip's Hugging Face towers itself (open_clip caches the absence of `transformers` in more than one
    module, and a class redefined by a reload no longer pickles)."""
    _state["lean"] = True


def import_open_clip(hf_text: bool = False) -> ModuleType:
    """open_clip, imported now if it is not yet; `hf_text`: the model about to be built has a Hugging Face text
    tower (or its config is not known yet), so open_clip must have `transformers`."""
    lean = _state["lean"] and not hf_text
    if lean and "open_clip" not in sys.modules and "transformers" not in sys.modules:
        _import_without_transformers()
    import open_clip

    if hf_text:
        _with_transformers()
    return open_clip


def _import_without_transformers() -> None:
    sys.modules["transformers"] = None  # type: ignore[assignment]  # `import transformers` raises ImportError
    try:
        import open_clip  # noqa: F401
    finally:
        if "transformers" in sys.modules and sys.modules["transformers"] is None:
            del sys.modules["transformers"]


def _with_transformers() -> None:
    """Re-run open_clip's Hugging Face module where it was imported without `transformers` (and `transformers` is
    installed): its classes, which open_clip's model module holds, then find `transformers` in their module."""
    hf = sys.modules.get(HF_MODULE)
    if hf is None or getattr(hf, "transformers", None) is not None:
        return
    if importlib.util.find_spec("transformers") is None:
        return  # not installed: open_clip says so itself when the tower is built
    importlib.reload(hf)
