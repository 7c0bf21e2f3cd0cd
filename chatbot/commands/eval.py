"""``chatbot eval``: held-out questions through base model, adapter and baselines."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import click

from chatbot.errors import ConfigError
from chatbot.settings import Settings, default_adapter_path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TAU_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "tau_retail"
EVAL_STORES = ("demo", "tau")


@click.command("eval")
@click.argument("mode", required=False, default="questions",
                type=click.Choice(["questions", "dialogues", "actions"]))
@click.option("--store", "stores", type=click.Choice([*EVAL_STORES, "all"]), multiple=True,
              help="Store(s) to evaluate (repeatable; default: both).")
@click.option("--limit", type=click.IntRange(1), default=120, show_default=True,
              help="Questions per store, taken evenly across categories (dialogues mode: "
                   "dialogues per store).")
@click.option("--systems", default="base,adapter,retrieval,facts", show_default=True,
              help="Comma-separated: base, adapter, retrieval, facts (dialogues mode: "
                   "adapter, base, retrieval; default all three).")
@click.option("-k", "keyword",
              help="Dialogues mode: only dialogues whose name, tags or file name contain this.")
@click.option("--adapter", type=click.Path(path_type=Path, file_okay=False),
              help="LoRA adapter to evaluate (default: the configured or shipped one).")
@click.option("--tau-dir", type=click.Path(path_type=Path, file_okay=False),
              help="τ-bench retail folder (default: ../shared/datasets/tau_retail).")
@click.option("--eval-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Scratch data dir for the eval database and indexes (default: DATA_DIR/eval).")
@click.option("--questions-dir", type=click.Path(path_type=Path, file_okay=False),
              default=PROJECT_ROOT / "bench" / "data", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              default=PROJECT_ROOT / "bench" / "results", show_default=True)
@click.option("--regenerate", is_flag=True, help="Rebuild the question files from the stores.")
@click.option("--reuse", is_flag=True,
              help="Keep other systems' replies from an earlier report in OUT for the same "
                   "questions (e.g. run base once, then re-run only adapter).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(0), default=0,
              help="Torch CPU threads for the engine (0: settings; 1 is fastest on a busy CPU).")
@click.option("--split", type=click.Choice(["dev", "train"]), default="dev", show_default=True,
              help="Actions mode: the τ-bench task split.")
@click.option("--sample", type=click.IntRange(1), default=None,
              help="Actions mode: a random sample of this many tasks (with --seed).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Actions mode: the sample's seed.")
@click.option("--no-model", is_flag=True,
              help="Actions mode: no language model (replies that would be generated restate "
                   "the facts); for quick checks of the flow, not for the reported figures.")
@click.pass_context
def eval_command(
    ctx: click.Context,
    mode: str,
    stores: tuple[str, ...],
    limit: int,
    systems: str,
    adapter: Path | None,
    tau_dir: Path | None,
    eval_dir: Path | None,
    questions_dir: Path,
    out: Path,
    regenerate: bool,
    reuse: bool,
    concurrency: int,
    threads: int,
    keyword: str | None,
    split: str,
    sample: int | None,
    seed: int,
    no_model: bool,
) -> None:
    """Score replies on held-out questions with expected facts.

    For the demo store (customers held out of training) and the τ-bench store (imported
    into a scratch database, never used in training): fact accuracy on order and policy
    questions, unsupported-claim rate, correct-handoff rate on unanswerable questions,
    leak rate of other customers' data, and mean reply length, for the base model, the
    adapter, a retrieval-only baseline and the model-free fact plan. Writes
    bench/results/eval-<store>.json and .md.

    ``chatbot eval dialogues`` plays the multi-turn dialogues of
    chatbot/evaluation/dialogues/ instead (carrying history, proven orders and dialogue
    state between turns as the server does) and reports per-turn accuracy, false claims,
    repeats, handoff accuracy and guard firings per store and system, in
    bench/results/eval-dialogues.json and .md (docs/evaluation.md).

    ``chatbot eval actions --split dev|train`` plays scripted τ-bench customers over the
    chat socket of an in-process server, one fresh τ store per task, and scores each task
    as τ-bench does (the exported state must equal the replay of the expected actions);
    writes bench/results/eval-actions-<split>.json (docs/evaluation.md).

    \b
    Examples:
      chatbot eval
      chatbot eval --store tau --limit 60 --systems adapter,retrieval
      chatbot eval --store demo --adapter /tmp/adapter --threads 1
      chatbot eval dialogues --systems adapter --store demo -k stock
      chatbot eval actions --split dev
      chatbot eval actions --split train --sample 100 --seed 0
    """
    stores = tuple(EVAL_STORES) if "all" in stores else stores
    if mode == "actions":
        explicit = ctx.get_parameter_source("limit") != click.core.ParameterSource.DEFAULT
        _actions(ctx, split, limit if explicit else None, sample, seed, adapter, tau_dir,
                 eval_dir, out, threads, no_model)
        return
    if mode == "dialogues":
        if ctx.get_parameter_source("systems") == click.core.ParameterSource.DEFAULT:
            systems = "adapter,base,retrieval"
        _dialogues(ctx, stores or EVAL_STORES, systems, adapter, tau_dir, eval_dir, out,
                   limit, keyword, concurrency, threads)
        return
    if keyword:
        raise click.UsageError("-k selects dialogues: use it with 'chatbot eval dialogues'")
    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    from chatbot.evaluation.runner import SYSTEMS

    unknown = [s for s in chosen if s not in SYSTEMS]
    if unknown or not chosen:
        raise click.UsageError(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    settings: Settings = ctx.obj.settings
    if threads:
        settings = settings.replace(engine_threads=threads)
        import torch

        torch.set_num_threads(threads)
    adapter_dir = adapter or settings.adapter_path or default_adapter_path()
    if "adapter" in chosen and adapter_dir is None:
        raise ConfigError("no LoRA adapter to evaluate: pass --adapter or train one first")
    scratch = eval_dir or settings.data_dir / "eval"
    eval_settings = dataclasses.replace(
        settings, data_dir=scratch, database_url=f"sqlite:///{scratch / 'eval.db'}"
    )
    summaries: dict[str, str] = {}
    for store in stores or EVAL_STORES:
        md = _evaluate_store(
            eval_settings, store, chosen, adapter_dir, tau_dir or DEFAULT_TAU_DIR,
            questions_dir, out, limit, regenerate, concurrency, reuse,
        )
        summaries[store] = md
        click.echo(md)
    # Only a run over the standard question sets into the standard reports describes the
    # adapter; a subset or scratch run must not overwrite its model card.
    standard_run = (
        out.resolve() == (PROJECT_ROOT / "bench" / "results").resolve()
        and questions_dir.resolve() == (PROJECT_ROOT / "bench" / "data").resolve()
    )
    if standard_run and adapter_dir is not None and (adapter_dir / "training.json").is_file():
        from chatbot.training.card import write_card

        write_card(adapter_dir, _all_summaries(out))
        click.echo(f"model card updated: {adapter_dir / 'README.md'}", err=True)


def _all_summaries(out: Path) -> dict[str, str]:
    return {s: (out / f"eval-{s}.md").read_text() for s in EVAL_STORES
            if (out / f"eval-{s}.md").is_file()}


def _prepare_store(settings: Settings, db: Any, store: str, tau_dir: Path) -> int:
    from knowledge_base.stores import find_store

    if store == "demo":
        from knowledge_base.demo import ensure_demo_store

        return ensure_demo_store(db).id
    with db.sessions() as session:
        existing = find_store(session, "tau")
        if existing is not None:
            return existing.id
    if not (tau_dir / "orders.json").is_file():
        raise ConfigError(f"τ-bench retail data not found in {tau_dir} (pass --tau-dir)")
    from knowledge_base.importers import import_path

    import_path(db, "tau-retail", tau_dir, "tau")
    with db.sessions() as session:
        found = find_store(session, "tau")
        assert found is not None
        return found.id


def _evaluate_store(
    settings: Settings, store: str, systems: list[str], adapter_dir: Path | None,
    tau_dir: Path, questions_dir: Path, out: Path, limit: int, regenerate: bool,
    concurrency: int, reuse: bool = False,
) -> str:
    from chatbot.evaluation import questions as Q
    from chatbot.evaluation.report import write_report
    from chatbot.evaluation.runner import (
        load_secrets,
        make_pipeline,
        run_facts,
        run_lm,
        run_retrieval,
    )
    from chatbot.storage.db import Database
    from knowledge_base.retrieval import Retriever

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    try:
        store_id = _prepare_store(settings, db, store, tau_dir)
        qfile = questions_dir / f"eval_{store}.jsonl"
        if regenerate or not qfile.is_file():
            generated = Q.generate(db, store_id, store, heldout_only=(store == "demo"))
            Q.write(qfile, generated)
            click.echo(f"wrote {len(generated)} questions to {qfile}", err=True)
        questions = Q.limit(Q.read(qfile), limit)
        secrets = load_secrets(db, store_id)
        retriever = Retriever(db, settings.index_dir)
        retriever.sync(store_id, progress=True)
        scored: dict[str, Any] = {}
        timings: dict[str, float] = {}
        if reuse:
            scored, timings = _earlier(out / f"eval-{store}.json", questions, systems)
        for system in systems:
            started = time.monotonic()
            if system == "retrieval":
                scored[system] = run_retrieval(retriever, settings, questions, store_id, secrets)
            elif system == "facts":
                pipeline = make_pipeline_no_engine(settings, db, retriever)
                scored[system] = run_facts(pipeline, questions, store_id, secrets)
            else:
                pipeline = make_pipeline(settings, db, system, adapter_dir)
                pipeline.prepare(store_id)
                scored[system] = asyncio.run(
                    run_lm(pipeline, system, questions, store_id, secrets,
                           concurrency=concurrency)
                )
            timings[system] = round(time.monotonic() - started, 1)
        meta = {
            "questions_file": str(qfile.relative_to(PROJECT_ROOT)) if qfile.is_relative_to(
                PROJECT_ROOT) else str(qfile),
            "questions": len(questions),
            "adapter": str(adapter_dir) if adapter_dir else None,
            "decoding": "greedy",
            "seconds": timings,
            "engine_dtype": settings.engine_dtype,
        }
        from chatbot.evaluation.runner import SYSTEMS

        scored = {s: scored[s] for s in SYSTEMS if s in scored}
        _, md_path, md = write_report(out, store, scored, meta)
        click.echo(f"report written to {md_path}", err=True)
        return md
    finally:
        db.dispose()


def _earlier(
    path: Path, questions: list[Any], skip: list[str]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Replies of other systems from an earlier report that cover exactly ``questions``."""
    import json

    from chatbot.evaluation.runner import Scored

    if not path.is_file():
        return {}, {}
    old = json.loads(path.read_text())
    wanted = [q.id for q in questions]
    scored: dict[str, Any] = {}
    for system, rows in old.get("replies", {}).items():
        by_id = {r["question_id"]: r for r in rows}
        if system in skip or not all(i in by_id for i in wanted):
            continue
        scored[system] = [Scored(**by_id[i]) for i in wanted]
        click.echo(f"reusing {system} replies from {path}", err=True)
    seconds = {k: v for k, v in old.get("meta", {}).get("seconds", {}).items() if k in scored}
    return scored, seconds


def make_pipeline_no_engine(settings: Settings, db: Any, retriever: Any) -> Any:
    """The pipeline for model-free planning (the ``facts`` system)."""
    from chatbot.answering.pipeline import Pipeline
    from chatbot.training.build import _PlanOnlyEngine, load_tokenizer

    return Pipeline(db, retriever, _PlanOnlyEngine(load_tokenizer(settings.model_path)), settings)


def _actions(
    ctx: click.Context, split: str, limit: int | None, sample: int | None, seed: int,
    adapter: Path | None, tau_dir: Path | None, eval_dir: Path | None, out: Path,
    threads: int, no_model: bool,
) -> None:
    """``chatbot eval actions``: scripted τ customers over the socket (issue #19)."""
    import platform
    import subprocess

    from chatbot.evaluation import actions as A
    from chatbot.replay.environment import REPLAY_LIMITS

    settings: Settings = ctx.obj.settings
    if threads:
        settings = settings.replace(engine_threads=threads)
        import torch

        torch.set_num_threads(threads)
    tau = tau_dir or DEFAULT_TAU_DIR
    # Its own scratch folder: the τ store's index must not replace another eval's store 1.
    scratch = eval_dir or settings.data_dir / "eval-actions"
    adapter_dir = adapter or settings.adapter_path or default_adapter_path()
    eval_settings = dataclasses.replace(
        settings, data_dir=scratch, database_url=f"sqlite:///{scratch / 'actions.db'}",
        limits=REPLAY_LIMITS, adapter_path=adapter_dir,
    )
    scratch.mkdir(parents=True, exist_ok=True)
    tasks = A.select_tasks(tau, split, limit=limit, sample=sample, seed=seed)
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
            if line.startswith("Model name")), platform.processor())
    except OSError:
        cpu = platform.processor()

    async def run() -> list[A.TaskResult]:
        if no_model:
            from chatbot.training.build import load_tokenizer

            engine: Any = A.SilentEngine(load_tokenizer(eval_settings.model_path))
        else:
            from chatbot.engine.engine import Engine

            engine = await asyncio.to_thread(Engine.load, eval_settings)
        start = getattr(engine, "start", None)
        if start is not None:
            await start()
        results = []
        try:
            runner = A.ActionEval(eval_settings, tau, engine, scratch / "actions")
            for task in tasks:
                result = await runner.run_task(task)
                results.append(result)
                click.echo(f"task {result.index:3} {'PASS' if result.reward == 1.0 else 'fail'}"
                           f" {','.join(result.kinds) or 'no_action':40} "
                           f"{','.join(result.outcomes):24} {result.seconds:6.1f} s"
                           f"{'  ' + result.error if result.error else ''}", err=True)
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                await close()
        return results

    started = time.monotonic()
    results = asyncio.run(run())
    meta = {"split": split, "limit": limit, "sample": sample, "seed": seed,
            "model": None if no_model else str(eval_settings.model_path),
            "adapter": None if no_model or adapter_dir is None else str(adapter_dir),
            "cpu": cpu, "wall_seconds": round(time.monotonic() - started, 1),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path, summary = A.write_report(out, split, results, meta)
    click.echo(A.format_summary(split, summary))
    click.echo(f"report written to {path}", err=True)


def _dialogues(
    ctx: click.Context, stores: tuple[str, ...], systems: str, adapter: Path | None,
    tau_dir: Path | None, eval_dir: Path | None, out: Path, limit: int,
    keyword: str | None, concurrency: int, threads: int,
) -> None:
    """``chatbot eval dialogues``: the multi-turn set through each system, one report."""
    from chatbot.evaluation.conversations import DIALOGUE_SYSTEMS

    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in DIALOGUE_SYSTEMS]
    if unknown or not chosen:
        raise click.UsageError(
            f"unknown system(s) {unknown}; dialogues run {', '.join(DIALOGUE_SYSTEMS)}"
        )
    settings: Settings = ctx.obj.settings
    if threads:
        settings = settings.replace(engine_threads=threads)
        import torch

        torch.set_num_threads(threads)
    adapter_dir = adapter or settings.adapter_path or default_adapter_path()
    if "adapter" in chosen and adapter_dir is None:
        raise ConfigError("no LoRA adapter to evaluate: pass --adapter or train one first")
    scratch = eval_dir or settings.data_dir / "eval"
    eval_settings = dataclasses.replace(
        settings, data_dir=scratch, database_url=f"sqlite:///{scratch / 'eval.db'}"
    )
    md = asyncio.run(_run_dialogues(
        eval_settings, list(stores), chosen, adapter_dir, tau_dir or DEFAULT_TAU_DIR, out,
        limit, keyword, concurrency,
    ))
    click.echo(md)


async def _run_dialogues(
    settings: Settings, stores: list[str], systems: list[str], adapter_dir: Path | None,
    tau_dir: Path, out: Path, limit: int, keyword: str | None, concurrency: int,
) -> str:
    from chatbot.evaluation import conversations as C
    from chatbot.evaluation.dialogue_report import write_report
    from chatbot.evaluation.dialogues import load_dialogues, select
    from chatbot.evaluation.runner import make_pipeline
    from chatbot.replay.checks import DatabaseEvidence
    from chatbot.storage.db import Database
    from knowledge_base.retrieval import Retriever

    dialogues = select(load_dialogues(), stores=stores, keyword=keyword, limit=limit)
    if not dialogues:
        raise click.UsageError("no dialogue matches the selection")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    used = sorted({d.store.name for d in dialogues})
    # Each system starts from the same fresh copy of the stores: an action a reply takes
    # (a cancellation, say) must not change what the next system or the next run sees.
    # Both stores are always imported, demo first, so their ids (and index folders) stay
    # the same whatever the selection.
    pristine = settings.data_dir / "dialogues-pristine.db"
    working = settings.data_dir / "dialogues.db"
    for path in (pristine, working):
        path.unlink(missing_ok=True)
    prepared = [s for s in EVAL_STORES
                if s in used or s == "demo" or (tau_dir / "orders.json").is_file()]
    db = await asyncio.to_thread(Database, f"sqlite:///{pristine}")
    try:
        store_ids = {s: await asyncio.to_thread(C.prepare_store, db, s, tau_dir)
                     for s in prepared}
        customers = await asyncio.to_thread(C.resolve_customers, db, dialogues, store_ids)
    finally:
        db.dispose()
    results: dict[str, dict[str, list[C.DialogueScore]]] = {s: {} for s in used}
    timings: dict[str, float] = {}

    def progress(d: C.DialogueScore) -> None:
        ok = sum(t.passed for t in d.turns)
        click.echo(f"{d.system:9} {d.store:4} {ok}/{len(d.turns)}  {d.dialogue}", err=True)

    for system in systems:
        started = time.monotonic()
        shutil.copyfile(pristine, working)
        db = await asyncio.to_thread(Database, f"sqlite:///{working}")
        try:
            retriever = Retriever(db, settings.index_dir)
            for store_id in store_ids.values():
                await asyncio.to_thread(retriever.sync, store_id, progress=True)
            evidence = DatabaseEvidence(db)
            if system == "retrieval":
                answer = C.retrieval_answer(retriever, settings.retrieval_min_score)
                played = await C.play_all(
                    dialogues, answer, system=system, store_ids=store_ids,
                    customer_ids=customers, evidence=evidence, concurrency=1,
                    on_done=progress)
            else:
                pipeline = await asyncio.to_thread(
                    make_pipeline, settings, db, system, adapter_dir)
                for store_id in store_ids.values():
                    await asyncio.to_thread(pipeline.prepare, store_id)
                await pipeline.start()
                try:
                    async def answer_lm(request: Any, pipeline: Any = pipeline) -> Any:
                        return await C.pipeline_answer(pipeline, request)

                    played = await C.play_all(
                        dialogues, answer_lm, system=system, store_ids=store_ids,
                        customer_ids=customers, evidence=evidence,
                        concurrency=concurrency, on_done=progress)
                finally:
                    await pipeline.close()
        finally:
            db.dispose()
        timings[system] = round(time.monotonic() - started, 1)
        for d in played:
            results[d.store].setdefault(system, []).append(d)
    meta = {
        "dialogues": {s: sum(1 for d in dialogues if d.store.name == s) for s in used},
        "turns": {s: sum(len(list(C.iter_shopper_turns(d))) for d in dialogues
                         if d.store.name == s) for s in used},
        "selection": {"keyword": keyword, "limit": limit},
        "adapter": str(adapter_dir) if adapter_dir else None,
        "decoding": "greedy",
        "seconds": timings,
        "engine_dtype": settings.engine_dtype,
    }
    _, md_path, md = write_report(out, results, meta)
    click.echo(f"report written to {md_path}", err=True)
    return md
