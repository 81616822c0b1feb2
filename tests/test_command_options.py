"""The typed option objects behind `index`, `train` and `classify` (radretrieve.application) agree with the
commands: every option of a command is a field of its object with the same default (so a script that builds
the object gets what the command line gets), and a --config file that is not JSON is one error line."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest

from radretrieve.application.classify import ClassifyOptions
from radretrieve.application.indexing import IndexOptions
from radretrieve.application.training import TrainOptions, train_config
from radretrieve.cli.classify_cmd import classify
from radretrieve.cli.index_cmd import index
from radretrieve.cli.train_cmd import train

# command parameter -> (field path in the object, how the command's value maps to it)
RENAMED = {
    "no_index": ("build_index", lambda v: not v),
    "quiet": ("progress", lambda v: not v),
    "template": ("templates", lambda v: tuple(v or ())),
    "prompt_task": ("prompt_tasks", lambda v: tuple(v or ())),
    "task": ("tasks", lambda v: ()),  # required on the command line (no default)
}
NOT_OPTIONS = {  # what each command keeps to itself: its paths and its output format
    "index": {"archive", "out", "as_json", "timings"},  # --timings: a file the command writes after the job
    "train": {"data", "out"},
    "classify": {"paths", "index", "fmt"},
}


def _fields(obj: object, prefix: str = "") -> dict[str, object]:
    """Field name -> default, nested option objects flattened (their fields by their own names)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_fields(value))
        else:
            out[f.name] = value
    return out


@pytest.mark.parametrize(
    ("name", "command", "options"),
    [("index", index, IndexOptions()), ("train", train, TrainOptions()), ("classify", classify, ClassifyOptions())],
)
def test_every_option_is_a_field_with_the_commands_default(name, command, options):
    fields = _fields(options)
    params = inspect.signature(command).parameters
    for param, p in params.items():
        if param in NOT_OPTIONS[name]:
            continue
        cli_default = p.default.default
        field, convert = RENAMED.get(param, (param, lambda v: tuple(v) if isinstance(v, list) else v))
        assert field in fields, f"{name} --{param}: no field {field!r} in {type(options).__name__}"
        assert fields[field] == convert(cli_default), f"{name} --{param}"
    assert len(params) - len(NOT_OPTIONS[name]) == len(fields)  # and no field the command lacks


def test_train_options_override_the_config_file(tmp_path):
    from radretrieve.training import TrainConfig

    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"seed": 3, "image_stage": {"epochs": 7, "lr": 0.5}}')
    got = train_config(TrainOptions(config=cfg, epochs_2d=2, batch_size=4, augment=True, templates=("{region}",)))
    expected = TrainConfig.from_dict(
        {
            "seed": 3,
            "image_stage": {"epochs": 2, "lr": 0.5, "batch_size": 4},
            "volume_stage": {"batch_size": 4},
            "augment": {"enabled": True},
            "text": {"templates": ("{region}",)},
        }
    )
    assert got == expected


def test_a_config_that_is_not_json_is_one_error_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "cfg.json").write_text("{not json")
    args = ["train", "--data", "data", "--out", "m", "--config", "cfg.json"]
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --config cfg.json: cannot read a JSON object (JSONDecodeError)"], proc.stderr
    assert not (tmp_path / "m").exists()
