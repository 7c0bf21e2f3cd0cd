"""``chatbot train``: build a store's supervised set and train a LoRA adapter on the CPU."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from chatbot.settings import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_FILE = "examples.jsonl"


@click.command()
@click.option("--store", default="demo", show_default=True, help="Store name or widget key.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Adapter folder (default: DATA_DIR/adapters/STORE). Checkpoints go to OUT/checkpoints.",
)
@click.option("--steps", type=click.IntRange(1), help="Stop after this many optimizer steps.")
@click.option("--epochs", type=click.FloatRange(0.01), default=1.0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUT.")
@click.option("--examples", "scale", type=click.FloatRange(0.05, 10.0), default=1.0,
              show_default=True, help="Scale every category's quota (0.5 = half the set).")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Peak learning rate.")
@click.option("--rank", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True,
              help="Micro-batch size (examples of similar length).")
@click.option("--accum", type=click.IntRange(1), default=2, show_default=True,
              help="Gradient accumulation: micro-batches per optimizer step.")
@click.option("--max-len", type=click.IntRange(64, 2048), default=384, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(1), default=10, show_default=True)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--threads", type=click.IntRange(0), default=0,
              help="Torch CPU threads (0: torch's default; 1 is fastest on a busy shared CPU).")
@click.option("--bitext", "bitext_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Bitext folder (default: ../shared/datasets/bitext_customer_support).")
@click.option("--no-bitext", is_flag=True, help="Do not use Bitext question phrasings.")
@click.option("--dry-run", is_flag=True, help="Build and save the training set, do not train.")
@click.pass_context
def train(
    ctx: click.Context,
    store: str,
    out: Path | None,
    steps: int | None,
    epochs: float,
    resume: bool,
    scale: float,
    lr: float,
    rank: int,
    batch: int,
    accum: int,
    max_len: int,
    checkpoint_every: int,
    seed: int,
    threads: int,
    bitext_dir: Path | None,
    no_bitext: bool,
    dry_run: bool,
) -> None:
    """Train a LoRA adapter that answers from the facts in the prompt.

    Builds a supervised set from the store (FAQ and policy questions, product questions,
    order status / tracking / items / totals / returns over its customers' orders,
    follow-ups, false premises, no-answer and attack questions), planned by the real
    answering pipeline and rendered with the server's prompt. Trains on the CPU with a
    progress bar and resumable checkpoints, then writes the adapter and its model card.

    \b
    Examples:
      chatbot train --store demo --dry-run
      nohup chatbot train --store demo --out chatbot/adapters/demo > /tmp/train.log 2>&1 &
      chatbot train --store demo --out /tmp/adapter --resume
      chatbot train --store demo --steps 20 --examples 0.2 --out /tmp/smoke
    """
    from chatbot.training.card import write_card, write_training_record
    from chatbot.training.dataset import load_examples
    from chatbot.training.lora import TrainConfig, plan_steps, train_lora

    settings: Settings = ctx.obj.settings
    if threads:
        import torch

        # On a busy shared CPU one thread is several times faster than two that keep
        # waiting for each other at every parallel region.
        torch.set_num_threads(threads)
    out_dir = out or settings.data_dir / "adapters" / store
    out_dir.mkdir(parents=True, exist_ok=True)
    if not no_bitext:
        bitext_dir = bitext_dir or PROJECT_ROOT.parent / "shared" / "datasets" / \
            "bitext_customer_support"
        if not bitext_dir.is_dir():
            raise click.UsageError(f"Bitext folder {bitext_dir} not found (or pass --no-bitext)")
    saved = out_dir / EXAMPLES_FILE
    if resume and saved.is_file():
        # Resuming must see exactly the examples the checkpoint was trained on.
        examples, data = load_examples(saved)
        skipped: dict[str, int] = {}
        click.echo(f"resuming with the {len(examples)} saved examples in {saved}", err=True)
    else:
        examples, data, skipped = _build(settings, store, out_dir, seed, scale, max_len,
                                         None if no_bitext else bitext_dir)
    store_name = store
    cfg = TrainConfig(
        rank=rank, alpha=2 * rank, learning_rate=lr, micro_batch=batch, grad_accum=accum,
        epochs=epochs, max_steps=steps, max_seq_len=max_len, checkpoint_every=checkpoint_every,
        seed=seed, threads=threads,
    )
    click.echo(f"{plan_steps(len(examples), cfg)} optimizer steps planned", err=True)
    if dry_run:
        click.echo(f"dry run: training set written to {out_dir / 'train.jsonl'}", err=True)
        return
    result = train_lora(settings.model_path, examples, out_dir, cfg, resume=resume)
    run = asdict(result)
    run.pop("loss_curve")
    run["loss_curve_every_10"] = result.loss_curve[::10] + result.loss_curve[-1:]
    record = {
        "store": store_name,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "data": data,
        "skipped_while_planning": skipped,
        "config": asdict(cfg),
        "run": run,
        "hardware": f"{platform.machine()} CPU, torch threads {threads or 'default'}",
        "bitext": not no_bitext,
    }
    write_training_record(out_dir, record)
    write_card(out_dir)
    click.echo(
        f"adapter written to {out_dir}: {result.steps} steps, loss {result.first_loss:.3f} -> "
        f"{result.final_loss:.3f}, {result.seconds / 60:.1f} min, "
        f"{result.tokens_per_second:.0f} tokens/s",
        err=True,
    )


def _build(
    settings: Settings,
    store: str,
    out_dir: Path,
    seed: int,
    scale: float,
    max_len: int,
    bitext_dir: Path | None,
) -> tuple[list[Any], dict[str, Any], dict[str, int]]:
    """Build, save and summarise the training set of ``store``."""
    from chatbot.storage.db import Database
    from chatbot.training.build import build_training_set, load_tokenizer
    from chatbot.training.dataset import save_examples, write_jsonl
    from chatbot.training.scenarios import Quotas
    from knowledge_base.stores import get_store

    db = Database(settings.database_url)
    try:
        if store == "demo":
            from knowledge_base.demo import ensure_demo_store

            ensure_demo_store(db)
        with db.sessions() as session:
            store_id = get_store(session, store).id
        tokenizer = load_tokenizer(settings.model_path)
        click.echo(f"building the training set from store {store!r}...", err=True)
        started = time.monotonic()
        built = build_training_set(
            settings, db, store_id, tokenizer=tokenizer, seed=seed, bitext_dir=bitext_dir,
            quotas=Quotas().scaled(scale), max_len=max_len,
        )
    finally:
        db.dispose()
    data = built.stats.as_dict()
    write_jsonl(out_dir / "train.jsonl", built.scenarios)
    save_examples(out_dir / EXAMPLES_FILE, built.examples, built.stats)
    click.echo(
        f"{data['examples']} examples, {data['tokens']} tokens "
        f"({data['supervised_tokens']} supervised) in {time.monotonic() - started:.0f}s; "
        f"per category: {json.dumps(data['per_category'])}; dropped: {json.dumps(data['dropped'])}",
        err=True,
    )
    return built.examples, data, built.skipped
