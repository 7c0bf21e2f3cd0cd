"""LoRA fine-tuning on the CPU with ``peft``: length-bucketed batches, resumable checkpoints.

The loop is deliberately plain (no ``Trainer``): the base model is small, the machine
is a shared CPU, and we want exact control over three things the generic trainers make
awkward: the loss mask (assistant tokens only, already in the examples), padding waste
(micro-batches of similar length), and checkpoints that resume to the same data order.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatbot.errors import ConfigError
from chatbot.training.dataset import Example

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LOSS_LOG = "losses.jsonl"
IGNORE_INDEX = -100
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults suit SmolLM2-135M on two CPU cores."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    micro_batch: int = 4
    grad_accum: int = 2
    epochs: float = 1.0
    max_steps: int | None = None  # caps the optimizer steps (overrides epochs when smaller)
    max_seq_len: int = 384
    checkpoint_every: int = 25
    keep_checkpoints: int = 2
    seed: int = 13
    threads: int = 0  # 0: leave torch's default


@dataclass
class TrainResult:
    """What the run did, for the model card."""

    steps: int
    examples_seen: int
    tokens_seen: int
    supervised_tokens: int
    first_loss: float
    final_loss: float
    mean_loss: float
    seconds: float
    tokens_per_second: float
    resumed_from: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


def _batches(examples: Sequence[Example], cfg: TrainConfig) -> list[list[int]]:
    """Micro-batches of example indices: shuffled, then sorted by length within windows of
    ``16 * micro_batch`` so padding stays small while the order stays random overall."""
    rng = random.Random(cfg.seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = cfg.micro_batch * 16
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i].input_ids))
        batches += [chunk[i : i + cfg.micro_batch] for i in range(0, len(chunk), cfg.micro_batch)]
    rng.shuffle(batches)
    return batches


def plan_steps(n_examples: int, cfg: TrainConfig) -> int:
    """Optimizer steps the run will take for ``n_examples``."""
    per_epoch = math.ceil(math.ceil(n_examples / cfg.micro_batch) / cfg.grad_accum)
    steps = max(1, math.ceil(per_epoch * cfg.epochs))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def _collate(examples: Sequence[Example], pad_id: int, max_len: int) -> dict[str, Any]:
    import torch

    width = min(max_len, max(len(e.input_ids) for e in examples))
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = min(width, len(ex.input_ids))
        ids[row, :n] = torch.tensor(ex.input_ids[:n])
        labels[row, :n] = torch.tensor(ex.labels[:n])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _masked_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed cross-entropy over the supervised (assistant) tokens only.

    The vocabulary projection is the single largest matmul of a 135M model (49k x 576);
    applying it only at the ~15% of positions that carry a label, instead of letting the
    model compute logits everywhere, saves a fifth of the step on the CPU.
    """
    import torch.nn.functional as F

    inner = model.get_base_model()
    hidden = inner.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = inner.lm_head(hidden[:, :-1][keep])  # (n_supervised, vocab)
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder under ``out_dir/checkpoints``."""
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def train_lora(
    model_path: Path,
    examples: Sequence[Example],
    out_dir: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples`` and save it (adapter files only) to ``out_dir``.

    Checkpoints (adapter, optimizer, step, loss log) go to ``out_dir/checkpoints`` every
    ``cfg.checkpoint_every`` steps; with ``resume`` the run continues from the newest one,
    skipping the micro-batches it already consumed (the batch order is a function of the
    seed, so it is the same order).
    """
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    if not examples:
        raise ConfigError("the training set is empty")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    # fp32 for training: bf16 matmuls on CPU are slower and the LoRA updates are small.
    base = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    base.config.use_cache = False
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=(
            cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
        ),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)  # the base with LoRA layers: what trains
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %d trainable parameters", cfg.rank, cfg.target_modules, trainable)
    pad_id = int(model.config.pad_token_id or model.config.eos_token_id or 0)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    batches = _batches(examples, cfg)
    total_steps = plan_steps(len(examples), cfg)

    step = 0
    losses: list[tuple[int, float]] = []
    tokens_seen = supervised = examples_seen = 0
    resumed_from = 0
    if resume:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            log.warning("--resume: no checkpoint in %s, starting from step 0",
                        out_dir / CHECKPOINTS)
        else:
            state = json.loads((ckpt / "state.json").read_text())
            if state.get("n_examples") != len(examples) or state.get("seed") != cfg.seed:
                raise ConfigError(
                    f"{ckpt} was written for {state.get('n_examples')} examples and seed "
                    f"{state.get('seed')}; rebuild the same training set to resume it"
                )
            set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
            optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
            step = resumed_from = int(state["step"])
            tokens_seen, supervised = int(state["tokens_seen"]), int(state["supervised"])
            examples_seen = int(state["examples_seen"])
            losses = [(int(s), float(v)) for s, v in state["losses"]]
            log.info("resumed from %s (step %d of %d)", ckpt, step, total_steps)

    model.train()
    started = time.monotonic()
    run_tokens = 0
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not progress)
    cursor = step * cfg.grad_accum
    while step < total_steps:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        # Weight each micro-batch by its supervised tokens so the step loss is a true
        # per-token mean across the accumulated micro-batches.
        group = [batches[(cursor + k) % len(batches)] for k in range(cfg.grad_accum)]
        cursor += cfg.grad_accum
        group_sup = sum(
            sum(1 for x in examples[i].labels[: cfg.max_seq_len] if x != IGNORE_INDEX)
            for idx in group
            for i in idx
        )
        for idx in group:
            batch = _collate([examples[i] for i in idx], pad_id, cfg.max_seq_len)
            loss_sum, n_sup = _masked_loss(model, batch)
            (loss_sum / max(1, group_sup)).backward()
            step_loss += float(loss_sum.detach()) / max(1, group_sup)
            n_tok = int(batch["attention_mask"].sum())
            tokens_seen += n_tok
            run_tokens += n_tok
            supervised += n_sup
            examples_seen += len(idx)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in optimizer.param_groups:
            g["lr"] = _lr_at(step, total_steps, cfg)
        optimizer.step()
        step += 1
        losses.append((step, round(step_loss, 4)))
        elapsed = time.monotonic() - started
        bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{run_tokens / max(elapsed, 1e-6):.0f}")
        bar.update(1)
        with (out_dir / LOSS_LOG).open("a") as fh:
            fh.write(json.dumps({"step": step, "loss": round(step_loss, 4)}) + "\n")
        if on_step is not None:
            on_step(step, step_loss)
        if step % cfg.checkpoint_every == 0 and step < total_steps:
            _save_checkpoint(
                model, optimizer, out_dir, cfg, step,
                {"n_examples": len(examples), "seed": cfg.seed, "tokens_seen": tokens_seen,
                 "supervised": supervised, "examples_seen": examples_seen,
                 "losses": losses, "config": asdict(cfg)},
            )
    bar.close()
    seconds = time.monotonic() - started
    save_adapter(model, out_dir)
    tail = [v for _, v in losses[-max(1, min(10, len(losses))):]]
    return TrainResult(
        steps=step,
        examples_seen=examples_seen,
        tokens_seen=tokens_seen,
        supervised_tokens=supervised,
        first_loss=losses[0][1] if losses else float("nan"),
        final_loss=sum(tail) / len(tail) if tail else float("nan"),
        mean_loss=sum(v for _, v in losses) / max(1, len(losses)),
        seconds=seconds,
        tokens_per_second=run_tokens / max(seconds, 1e-6),
        resumed_from=resumed_from,
        loss_curve=losses,
    )


def _save_checkpoint(
    model: Any, optimizer: Any, out_dir: Path, cfg: TrainConfig, step: int, state: dict[str, Any]
) -> None:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = out_dir / CHECKPOINTS
    tmp = root / f".tmp-{step:05d}"
    final = root / f"step-{step:05d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, str(tmp / "adapter_model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    # state.json is written last: a checkpoint without it is incomplete and ignored.
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    done = sorted(
        (p for p in root.iterdir() if p.name.startswith("step-")),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for old in done[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", final)


def save_adapter(model: Any, out_dir: Path, dtype: str = "bfloat16") -> None:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (weights in ``dtype``,
    half the size of fp32; the engine merges them in fp32 anyway)."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = model.peft_config["default"]
    # The local model path means nothing on another machine; name the published base.
    config.base_model_name_or_path = BASE_MODEL_ID
    config.inference_mode = True
    config.save_pretrained(str(out_dir))
    cast = getattr(torch, dtype)
    weights = {
        k: v.detach().to(cast).contiguous() for k, v in get_peft_model_state_dict(model).items()
    }
    save_file(weights, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
