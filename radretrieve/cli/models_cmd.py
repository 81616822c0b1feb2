"""`radretrieve models`: list models (registry configs and model directories, no torch import), `models pull
NAME` (published weights from the Hugging Face hub) and `models import FILE` (a weights file copied by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from radretrieve.cli.output import say, say_json

if TYPE_CHECKING:
    from radretrieve.models.pull import Result

models_app = typer.Typer(
    help="List models; get published weights (models pull NAME) or convert a weights file (models import FILE).",
    invoke_without_command=True,
)


@models_app.callback()
def models(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")
) -> None:
    """List registry configs (untrained: random weights) and the model directories under the models home
    ($RADRETRIEVE_HOME/models): pulled, imported or trained, with size and licence."""
    if ctx.invoked_subcommand is not None:
        return
    from radretrieve.models.published import CATALOG, installed_models, models_home

    rows = _registry_rows() + installed_models()
    if as_json:
        say_json(json.dumps(rows, indent=1))
        return
    say(f"{'name':<20} {'state':<10} {'params':>10} {'dim':>5} {'px':>4} {'pooling':<9} description")
    for r in rows[: len(_registry_names())]:
        say(
            f"{r['name']:<20} {'untrained':<10} {_human(r['params']):>10} {r['embed_dim']:>5} {r['image_size']:>4} "
            f"{r['pooling']:<9} {r['description']}"
        )
    local = rows[len(_registry_names()) :]
    say(f"\nmodel directories in {models_home()}:" if local else f"\nno model directories in {models_home()} yet")
    for r in local:
        say(f"{r['name']:<20} {r['state']:<10} {_size(int(r['size_bytes'])):>10}  licence: {r['licence'] or '?'}")
        say(f"{'':<20} --model {r['path']}")
    say("\npublished weights (radretrieve models pull NAME): " + ", ".join(CATALOG))


def _registry_names() -> list[str]:
    from radretrieve.models.registry import list_models

    return list_models()


def _registry_rows() -> list[dict[str, object]]:
    from radretrieve.models.registry import count_parameters, get_model_config

    rows: list[dict[str, object]] = []
    for name in _registry_names():
        cfg = get_model_config(name)
        n = count_parameters(cfg)
        rows.append(
            {
                "name": name,
                "state": "untrained",
                "params": n.total,
                "vision_params": n.vision,
                "text_params": n.text,
                "adapter_params": n.adapter,
                "embed_dim": cfg.embed_dim,
                "image_size": cfg.preprocess.image_size,
                "pooling": cfg.adapter.pooling,
                "description": cfg.description,
            }
        )
    return rows


@models_app.command("pull")
def pull(
    name: str = typer.Argument(
        ..., help="A published model (radclip, openai-vit-b-16, biomedclip) or hf-hub:ORG/REPO."
    ),
    to: Path | None = typer.Option(
        None, "--to", help="Model directory to write (default $RADRETRIEVE_HOME/models/NAME)."
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Hub revision: a branch, tag or commit (default main)."
    ),
) -> None:
    """Download published weights from the Hugging Face hub (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE honoured),
    check their sha256, convert them into a model directory and print the --model value to use."""
    from radretrieve.models.published import get_published
    from radretrieve.models.pull import pull as do_pull

    get_published(name)  # an unknown name is refused before anything is imported or downloaded
    _quiet_http()
    _report(do_pull(name, to, revision), "pulled")


@models_app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., help="A weights file: a transformers CLIPModel state dict (RadCLIP.pth) or open_clip."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name (default: from the file name)."),
    fmt: str | None = typer.Option(None, "--format", help="hf-clip or open_clip (default: read from the tensors)."),
    to: Path | None = typer.Option(
        None, "--to", help="Model directory to write (default $RADRETRIEVE_HOME/models/NAME)."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="open_clip model name of the weights (e.g. ViT-B-16, ViT-B-16-quickgelu)."
    ),
    quick_gelu: bool | None = typer.Option(
        None,
        "--quick-gelu/--no-quick-gelu",
        help="The weights use quick GELU (OpenAI's CLIP) / GELU (LAION, most open_clip); needed unless a config "
        "beside the file says (open_clip_config.json, config.json) or --arch does.",
    ),
) -> None:
    """Convert a weights file copied by hand into a model directory; its sha256 is recorded."""
    from radretrieve.foundation.errors import ConfigError
    from radretrieve.models.published import FORMATS

    if fmt is not None and fmt not in FORMATS[:2]:
        raise ConfigError(f"--format {fmt!r}: one of {', '.join(FORMATS[:2])}")
    from radretrieve.models.pull import import_file

    result = import_file(file, name, fmt, to, arch=arch, quick_gelu=quick_gelu)  # type: ignore[arg-type]
    _report(result, "imported")


def _quiet_http() -> None:
    """The HTTP clients log every request at INFO; the pull says what it did itself (--verbose shows them)."""
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _report(result: Result, verb: str) -> None:
    """What a pull or import did, ending with the `--model` value (scripts read the last line)."""
    p = result.provenance
    if result.unchanged:
        say(f"{result.directory} already holds these weights ({p.digest}); nothing changed")
    else:
        say(f"{verb} {p.origin} ({p.digest}) into {result.directory}")
    for note in result.notes:
        say(f"note: {note}", err=True)
    if p.licence:
        say(f"licence: {p.licence}")
    say(f"use it with: --model {result.directory}")


def _human(n: object) -> str:
    n = int(n)  # type: ignore[call-overload]
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
