"""Prompt ensembles: the texts that stand for a class ("chest", "CT") in zero-shot classification and in the
`labels` retrieval protocol, and the class embeddings built from them.

A class is described by several templates rather than one word, as CLIP's zero-shot evaluation does: the text
tower was trained on sentences, and one template's quirks average out over many. A class embedding is the mean
of its L2-normalised prompt embeddings, L2-normalised again.

Placeholders a template may use (Python `str.format` names):

- `{class}`: the class label as given (`chest`, `CT`);
- `{task}`: the task name (`organ`, `modality`);
- `{<task name>}`: the class label again, so a template written for one task reads naturally, e.g.
  `"an {organ} radiograph"` in the `organ` task.

Any other name is an error when the templates are loaded or used, naming the template.

A templates file is JSON or text:

- JSON: a list of templates (used for every task), or an object mapping a task name to its list, with `"*"` as
  the list for tasks not named (a task not named falls back to `"*"`, then to the built-in defaults);
- text (any other suffix): one template per line for every task; blank lines and lines starting with `#` are
  skipped.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.foundation.config import config_hash
from radretrieve.foundation.errors import ConfigError

ANY_TASK = "*"  # the key of the templates used for tasks without their own list

# Built-in radiology ensembles. Organ prompts name the common modalities too, so an organ class embedding is
# not tied to one modality's appearance; modality prompts name no organ for the same reason.
DEFAULT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "organ": (
        "a {class} image",
        "an image of the {class}",
        "a radiology image of the {class}",
        "a medical image of the {class}",
        "radiograph of the {class}",
        "an X-ray of the {class}",
        "a CT of the {class}",
        "an MRI of the {class}",
        "{class} CT",
        "{class} MRI",
        "{class} X-ray",
        "{class}",
    ),
    "modality": (
        "a {class} image",
        "a {class} scan",
        "a {class} study",
        "a radiology image acquired with {class}",
        "a medical image, {class}",
        "{class} of the patient",
        "{class}",
    ),
    ANY_TASK: (
        "a {class} image",
        "a radiology image showing {class}",
        "a medical image of {class}",
        "{task}: {class}",
        "{class}",
    ),
}


@dataclass(frozen=True)
class Templates:
    """Templates per task. `by_task[ANY_TASK]` serves tasks without their own list."""

    by_task: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    source: str = "built-in"  # where they came from, for messages (a file name or "built-in")

    def for_task(self, task: str) -> tuple[str, ...]:
        """The ensemble of `task`: its own list, else the `*` list, else the built-in defaults."""
        found = self.by_task.get(task) or self.by_task.get(ANY_TASK)
        if found:
            return tuple(found)
        return DEFAULT_TEMPLATES.get(task) or DEFAULT_TEMPLATES[ANY_TASK]

    def to_dict(self) -> dict[str, list[str]]:
        return {task: list(tpls) for task, tpls in sorted(self.by_task.items())}


def default_templates() -> Templates:
    return Templates()


def templates_hash(templates: Templates | Sequence[str]) -> str:
    """Short stable hash of a template set: stored next to predictions so results say which prompts made them."""
    data = templates.to_dict() if isinstance(templates, Templates) else {ANY_TASK: list(templates)}
    return config_hash(data)


def load_templates(path: str | Path) -> Templates:
    """Read a templates file (JSON or text, see the module docstring); errors name the file."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read templates file: {exc}") from exc
    if path.suffix.lower() == ".json":
        by_task = _parse_json(path, raw)
    else:
        lines = [ln.strip() for ln in raw.splitlines()]
        by_task = {ANY_TASK: tuple(ln for ln in lines if ln and not ln.startswith("#"))}
    for task, tpls in by_task.items():
        if not tpls:
            raise ConfigError(f"{path}: no templates for task {task!r}")
        for tpl in tpls:
            _check(tpl, task, where=str(path))
    return Templates(by_task=by_task, source=str(path))


def _parse_json(path: Path, raw: str) -> dict[str, tuple[str, ...]]:
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if isinstance(data, list):
        data = {ANY_TASK: data}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a list of templates or an object of task -> list of templates")
    out: dict[str, tuple[str, ...]] = {}
    for task, tpls in data.items():
        if not isinstance(tpls, list) or not all(isinstance(t, str) and t.strip() for t in tpls):
            raise ConfigError(f"{path}: templates of task {task!r} must be a list of non-empty strings")
        out[str(task)] = tuple(t.strip() for t in tpls)
    return out


def _check(template: str, task: str, where: str) -> list[str]:
    """The placeholder names of `template`; unknown names or bad braces are a ConfigError."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {template!r}: {exc}") from exc
    allowed = {"class", "task"} | ({task} if task != ANY_TASK else set())
    bad = [n for n in names if n not in allowed and not (task == ANY_TASK and n.isidentifier())]
    if bad or "" in names:
        raise ConfigError(
            f"{where}: template {template!r} uses {{{(bad or [''])[0]}}}; allowed: {{class}}, {{task}}, {{<task name>}}"
        )
    return names


def prompts_for(task: str, label: str, templates: Templates | Sequence[str] | None = None) -> list[str]:
    """The prompts of class `label` in `task`, in template order, duplicates dropped."""
    tpls = _resolve(task, templates)
    out: list[str] = []
    for tpl in tpls:
        names = _check(tpl, task, where=f"templates for task {task!r}")
        unknown = [n for n in names if n not in ("class", "task", task)]
        if unknown:  # a `*` template that names another task's placeholder: say so here, where it is used
            raise ConfigError(f"template {tpl!r} uses {{{unknown[0]}}}, which task {task!r} does not fill")
        text = " ".join(tpl.format_map({"class": label, "task": task, task: label}).split())
        if text and text not in out:
            out.append(text)
    return out


def _resolve(task: str, templates: Templates | Sequence[str] | None) -> tuple[str, ...]:
    if templates is None:
        return Templates().for_task(task)
    if isinstance(templates, Templates):
        return templates.for_task(task)
    if isinstance(templates, str):  # a lone string is one template, not a sequence of characters
        return (templates,)
    return tuple(templates)


def class_embeddings(
    encode_text: Callable[[Sequence[str]], Any],
    labels: Sequence[str],
    templates: Templates | Sequence[str] | None = None,
    task: str = ANY_TASK,
) -> np.ndarray:
    """float32 [C, D]: per class, the mean of its L2-normalised prompt embeddings, L2-normalised again.

    `encode_text(texts)` returns [N, D] (a torch tensor or an array); all prompts go in one call.
    `templates`: a `Templates` set (the ensemble of `task` is used) or a plain list of templates.
    """
    if not labels:
        raise ConfigError(f"task {task!r} has no classes")
    prompts = [prompts_for(task, str(label), templates) for label in labels]
    flat = [p for ps in prompts for p in ps]
    emb = _as_array(encode_text(flat))
    if emb.ndim != 2 or emb.shape[0] != len(flat):
        raise ConfigError(f"encode_text returned shape {emb.shape} for {len(flat)} prompts")
    emb = _normalise(emb)
    out = np.empty((len(labels), emb.shape[1]), dtype=np.float32)
    start = 0
    for c, ps in enumerate(prompts):
        out[c] = emb[start : start + len(ps)].mean(axis=0)
        start += len(ps)
    return _normalise(out)


def _as_array(x: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array-like -> float32 numpy, without importing torch here."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
