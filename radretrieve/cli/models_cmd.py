"""`radretrieve models`: list registry models with parameter counts (no torch import)."""

from __future__ import annotations

import json

import typer

from radretrieve.cli.output import say, say_json


def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the built-in model configs with parameter counts, embedding dim and input size."""
    from radretrieve.models.registry import count_parameters, get_model_config, list_models

    rows = []
    for name in list_models():
        cfg = get_model_config(name)
        n = count_parameters(cfg)
        rows.append(
            {
                "name": name,
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
    if as_json:
        say_json(json.dumps(rows, indent=1))
        return
    say(f"{'name':<20} {'params':>10} {'dim':>5} {'px':>4} {'pooling':<9} description")
    for r in rows:
        say(
            f"{r['name']:<20} {_human(r['params']):>10} {r['embed_dim']:>5} {r['image_size']:>4} "
            f"{r['pooling']:<9} {r['description']}"
        )


def _human(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def register(app: typer.Typer) -> None:
    app.command("models")(models)
