"""Language-model engine speed: our engine against plain ``transformers`` generate.

    python bench/engine.py [--new-tokens 64] [--concurrency 4,16,64] [--baseline-cap 16]

One run, one realistic grounded prompt (~300 tokens: a store-assistant system prompt with
8 fact lines with ids, then a shopper question, through the chat template). Measured for
our engine (``Engine.load`` with the default settings) and, in the same run, for the
baseline (``LlamaForCausalLM.generate``, fp32, greedy):

- time to first token, cold and with the system prefix already cached (the baseline has
  no prefix cache, so both are its cold time);
- single-stream decode tokens/s (after the first token) over 64 tokens with the end of
  text ignored, our prompt-lookup drafting off: the raw per-token speed;
- single-stream decode tokens/s over the natural replies to the 8 questions (each stops at
  its end of text), for our engine with drafting on (the default) and off, for the
  baseline, and for the baseline with transformers' own prompt lookup
  (``prompt_lookup_num_tokens``); both sides run the shipped adapter here (merged into
  the baseline with peft), so they give the same kind of replies;
- aggregate tokens/s and p95 inter-token gap with 4, 16 and 64 concurrent streams (each
  stream asks a different question under the same system prompt); the baseline runs them
  as one left-padded batched ``generate`` and, at high concurrency, with fewer new tokens
  (``--baseline-cap``) so it finishes; the table says so;
- the resident memory of a process holding only our loaded engine (a subprocess).

Each side runs with its own best OpenMP setting: ours with the ``OMP_WAIT_POLICY=PASSIVE``
the ``chatbot`` package sets (idle threads sleep instead of spinning), the baseline in a
subprocess with the environment as it was before (by default libgomp's spinning threads,
which is how ``transformers`` normally runs).

When ``llama_cpp`` is importable, llama.cpp on the same GGUF is added as a column
(single stream only). Prints a table with ratios and writes bench/results/engine.json.
"""

from __future__ import annotations

import os

# Before the chatbot package sets its own default (the baseline subprocess gets this back).
OMP_WAIT_POLICY_BEFORE = os.environ.get("OMP_WAIT_POLICY")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# chatbot first: it sets the engine's OpenMP default before torch loads libgomp
import chatbot  # noqa: E402, F401, I001
import torch  # noqa: E402

from chatbot.engine import Engine, GenerationRequest  # noqa: E402
from chatbot.settings import Settings  # noqa: E402

SYSTEM = """You are the customer-service assistant of Northwind Outfitters, an online store \
for outdoor gear. Answer using only the facts below and cite the fact id in brackets. If \
the facts do not answer the question, say so and offer a human agent.

Facts:
[returns-window] Unworn items can be returned within 30 days of delivery for a full refund \
to the original payment method.
[returns-label] Return labels are free within the US.
[shipping-standard] Standard shipping takes 3-5 business days and is free on orders over \
$75; otherwise it costs $6.95.
[shipping-express] Express shipping takes 1-2 business days and costs $19.95.
[exchange-size] Size exchanges are free; the new size ships as soon as the return is scanned.
[warranty-gear] Tents and packs carry a 2-year warranty against defects.
[product-P1042] Ridgeline Rain Jacket: waterproof shell, sizes XS-XXL, $129.00, \
black or moss.
[order-status] Order status and tracking links are on the Orders page once an order ships."""

QUESTIONS = [
    "Hi! I bought the Ridgeline rain jacket last week but it's too small. Can I swap it "
    "for a bigger size, and do I have to pay for shipping the return?",
    "How long does express shipping take and how much does it cost?",
    "My tent's zipper broke after a year. Is that covered?",
    "Can I return a jacket I've worn once on a hike?",
    "Is shipping free if I spend $80?",
    "What colours does the Ridgeline Rain Jacket come in?",
    "Where can I find the tracking link for my order?",
    "Do I get my money back or store credit when I return something?",
]


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
    )
    return [int(i) for i in (ids if isinstance(ids, list) else ids["input_ids"])]


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))]


# -- our engine ------------------------------------------------------------------------


async def _timed_stream(engine: Engine, request: GenerationRequest) -> list[float]:
    """Timestamps of every generated token."""
    stamps: list[float] = []
    async for event in engine.stream_events(request):
        if event.token_id >= 0:
            stamps.append(time.perf_counter())
    return stamps


def bench_ours(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    engine = Engine.load(settings)
    tok = engine.tokenizer
    prompts = [prompt_ids(tok, q) for q in QUESTIONS]
    n = args.new_tokens

    async def run() -> dict[str, Any]:
        await engine.start()
        out: dict[str, Any] = {"format": engine.model.format, "prompt_tokens": len(prompts[0])}
        # Warm-up on an unrelated prompt (first-call allocations), then drop its cache.
        await engine.complete(GenerationRequest([1, 2, 3, 4, 5, 6, 7, 8], max_new_tokens=4))
        engine.scheduler.prefix_cache.clear()
        engine.scheduler.draft_tokens = 0  # raw per-token speed first
        start = time.perf_counter()
        stamps = await _timed_stream(engine, _req(prompts[0], n))
        out["ttft_cold_s"] = stamps[0] - start
        out["decode_tok_s"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        for draft in (0, settings.engine_draft_tokens):
            engine.scheduler.draft_tokens = draft
            drafted, accepted = engine.scheduler.drafted, engine.scheduler.accepted
            tokens, seconds = 0, 0.0
            for ids in prompts:
                engine.scheduler.prefix_cache.clear()
                req = GenerationRequest(prompt_ids=ids, max_new_tokens=n)
                stamps = await _timed_stream(engine, req)
                tokens += len(stamps) - 1
                seconds += stamps[-1] - stamps[0]
            out[f"replies_draft{draft}"] = {
                "decode_tok_s": tokens / seconds,
                "tokens": tokens,
                "drafted": engine.scheduler.drafted - drafted,
                "accepted": engine.scheduler.accepted - accepted,
            }
        start = time.perf_counter()
        stamps = await _timed_stream(engine, _req(prompts[1], 1))
        out["ttft_cached_s"] = stamps[0] - start
        for c in args.concurrency:
            reqs = [_req(prompts[i % len(prompts)], n) for i in range(c)]
            start = time.perf_counter()
            all_stamps = await asyncio.gather(*(_timed_stream(engine, r) for r in reqs))
            wall = max(s[-1] for s in all_stamps) - start
            gaps = [b - a for s in all_stamps for a, b in zip(s, s[1:], strict=False)]
            out[f"c{c}"] = {
                "streams": c,
                "new_tokens": n,
                "aggregate_tok_s": sum(len(s) for s in all_stamps) / wall,
                "p95_gap_s": p95(gaps),
                "ttft_p50_s": statistics.median(s[0] - start for s in all_stamps),
            }
        await engine.close()
        return out

    return asyncio.run(run())


def _req(ids: list[int], n: int) -> GenerationRequest:
    return GenerationRequest(prompt_ids=ids, max_new_tokens=n, ignore_eos=True)


# -- transformers baseline ---------------------------------------------------------------


class _Stamps:
    """A generate() streamer that only records when each step's tokens arrive."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.extra = 0  # tokens beyond one per put (prompt lookup accepts several at once)
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first "streams" the prompt itself
            self._prompt_seen = True
            return
        self.stamps.append(time.perf_counter())
        if value.dim() <= 1 or value.shape[0] == 1:  # batch 1: maybe several tokens at once
            self.extra += value.numel() - 1

    def end(self) -> None:
        pass


def _natural_replies(model: Any, prompts: list[list[int]], n: int, **kw: Any) -> dict[str, Any]:
    """Greedy replies that stop at their end of text; decode tok/s over all of them."""
    tokens, seconds = 0, 0.0
    for ids in prompts:
        streamer = _Stamps()
        x = torch.tensor([ids])
        with torch.inference_mode():
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                           do_sample=False, streamer=streamer, **kw)  # fmt: skip
        # prompt lookup hands several tokens to the streamer at once: count them all
        tokens += len(streamer.stamps) - 1 + streamer.extra
        seconds += streamer.stamps[-1] - streamer.stamps[0]
    return {"decode_tok_s": tokens / seconds, "tokens": tokens}


def bench_transformers(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(settings.model_path))
    model = LlamaForCausalLM.from_pretrained(str(settings.model_path), dtype=torch.float32)
    model.eval()
    prompts = [prompt_ids(tok, q) for q in QUESTIONS]
    n = args.new_tokens
    replies: dict[str, Any] = {}
    if settings.adapter_path is not None:
        from peft import PeftModel

        tuned = (
            PeftModel.from_pretrained(
                LlamaForCausalLM.from_pretrained(str(settings.model_path), dtype=torch.float32),
                str(settings.adapter_path),
            )
            .merge_and_unload()
            .eval()
        )
        replies["plain"] = _natural_replies(tuned, prompts, n)
        replies["prompt_lookup"] = _natural_replies(tuned, prompts, n, prompt_lookup_num_tokens=4)
        del tuned

    def generate(batch: list[list[int]], new: int) -> tuple[float, list[float]]:
        width = max(len(p) for p in batch)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        streamer = _Stamps()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=pad,
                streamer=streamer,
            )
        return start, streamer.stamps

    generate([prompts[-1]], 2)  # warm-up
    out: dict[str, Any] = {"format": "fp32 (transformers generate)", "replies": replies}
    start, stamps = generate([prompts[0]], n)
    out["ttft_cold_s"] = stamps[0] - start
    out["ttft_cached_s"] = out["ttft_cold_s"]  # no prefix cache in plain generate
    out["decode_tok_s"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    for c in args.concurrency:
        new = n if c <= 16 else min(n, args.baseline_cap)
        batch = [prompts[i % len(prompts)] for i in range(c)]
        start, stamps = generate(batch, new)
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        out[f"c{c}"] = {
            "streams": c,
            "new_tokens": new,
            "aggregate_tok_s": c * len(stamps) / (stamps[-1] - start),
            "p95_gap_s": p95(gaps),
            "ttft_p50_s": stamps[0] - start,
        }
    return out


# -- llama.cpp (optional) ----------------------------------------------------------------


def bench_llama_cpp(args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        import llama_cpp  # type: ignore[import-not-found]
    except ImportError:
        return None
    from chatbot.engine.loader import installed_gguf

    gguf = installed_gguf()
    if gguf is None:
        return None
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, n_threads=2, verbose=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Settings.from_env().model_path))
    ids = prompt_ids(tok, QUESTIONS[0])
    stamps: list[float] = []
    start = time.perf_counter()
    for _ in llm.generate(ids, temp=0.0):
        stamps.append(time.perf_counter())
        if len(stamps) >= args.new_tokens:
            break
    return {
        "format": "GGUF Q4_1 (llama.cpp)",
        "ttft_cold_s": stamps[0] - start,
        "ttft_cached_s": stamps[0] - start,
        "decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
    }


# -- memory ------------------------------------------------------------------------------

_RSS_PROBE = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from chatbot.engine import Engine, GenerationRequest
from chatbot.settings import Settings
engine = Engine.load(Settings.from_env())
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
loaded = status("VmRSS:")
asyncio.run(engine.complete(GenerationRequest(list(range(100, 400)), max_new_tokens=32)))
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (this benchmark, GBs).
print(loaded, status("VmRSS:"), status("VmHWM:"))
"""


def measure_rss() -> dict[str, int]:
    code = _RSS_PROBE.format(repo=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, after, peak = (int(x) for x in proc.stdout.split()[-3:])
    return {"rss_loaded_bytes": loaded, "rss_after_request_bytes": after, "peak_bytes": peak}


# -- report ------------------------------------------------------------------------------


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    ours, base = results["ours"], results["transformers"]
    cpp = results.get("llama_cpp")
    head = f"{'metric':38} {'ours':>10} {'transformers':>13} {'ratio':>7}"
    head += f" {'llama.cpp':>10}" if cpp else ""
    lines = [head, "-" * len(head)]

    def row(name: str, a: float, b: float, fmt: str, higher_better: bool, c: Any = None) -> None:
        ratio = (a / b if higher_better else b / a) if a and b else float("nan")
        line = f"{name:38} {a:>10{fmt}} {b:>13{fmt}} {ratio:>6.1f}x"
        if cpp:
            line += f" {c:>10{fmt}}" if isinstance(c, float) else f" {'-':>10}"
        lines.append(line)

    row("TTFT cold (ms)", ours["ttft_cold_s"] * 1e3, base["ttft_cold_s"] * 1e3, ".0f", False,
        cpp and cpp["ttft_cold_s"] * 1e3)  # fmt: skip
    row("TTFT, system prefix cached (ms)", ours["ttft_cached_s"] * 1e3,
        base["ttft_cached_s"] * 1e3, ".0f", False, cpp and cpp["ttft_cached_s"] * 1e3)  # fmt: skip
    row("single-stream decode (tok/s)", ours["decode_tok_s"], base["decode_tok_s"], ".1f", True,
        cpp and cpp["decode_tok_s"])  # fmt: skip
    plain, lookup = base["replies"].get("plain"), base["replies"].get("prompt_lookup")
    drafted = next(v for k, v in ours.items() if k.startswith("replies_draft") and k[-1] != "0")
    if plain:
        row("replies, drafting on (tok/s)", drafted["decode_tok_s"], plain["decode_tok_s"],
            ".1f", True)  # fmt: skip
        row("replies, drafting off (tok/s)", ours["replies_draft0"]["decode_tok_s"],
            plain["decode_tok_s"], ".1f", True)  # fmt: skip
        row("replies: ours vs base + prompt lookup", drafted["decode_tok_s"],
            lookup["decode_tok_s"], ".1f", True)  # fmt: skip
    lines.append(
        f"replies: {drafted['tokens']} tokens over {len(QUESTIONS)} questions; drafts kept "
        f"{drafted['accepted']} of {drafted['drafted']} proposed tokens"
    )
    for c in args.concurrency:
        o, b = ours[f"c{c}"], base[f"c{c}"]
        capped = f" [base {b['new_tokens']} tok]" if b["new_tokens"] != o["new_tokens"] else ""
        row(f"{c} streams: aggregate (tok/s){capped}", o["aggregate_tok_s"],
            b["aggregate_tok_s"], ".1f", True)  # fmt: skip
        row(f"{c} streams: p95 inter-token gap (ms)", o["p95_gap_s"] * 1e3,
            b["p95_gap_s"] * 1e3, ".0f", False)  # fmt: skip
    mem = results["memory"]
    lines.append(
        f"engine process RSS: {mem['rss_loaded_bytes'] / 2**20:.0f} MiB loaded, "
        f"{mem['rss_after_request_bytes'] / 2**20:.0f} MiB after a request, "
        f"peak {mem['peak_bytes'] / 2**20:.0f} MiB"
    )
    return "\n".join(lines)


def run_baselines(args: argparse.Namespace) -> dict[str, Any]:
    """The baselines in a child process with the OpenMP setting from before ours."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if OMP_WAIT_POLICY_BEFORE is not None:
        env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY_BEFORE
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baselines.json"
        cmd = [sys.executable, __file__, "--baseline-only", "--out", str(out),
               "--new-tokens", str(args.new_tokens), "--baseline-cap", str(args.baseline_cap),
               "--concurrency", ",".join(map(str, args.concurrency))]  # fmt: skip
        subprocess.run(cmd, env=env, check=True)
        return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="4,16,64")
    parser.add_argument("--baseline-cap", type=int, default=16,
                        help="new tokens for the baseline above 16 streams")  # fmt: skip
    parser.add_argument("--ours-only", action="store_true",
                        help="skip the baseline (for quick tuning; prints no table)")  # fmt: skip
    parser.add_argument("--baseline-only", action="store_true",
                        help="internal: measure the baselines only, JSON to --out")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engine.json")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    settings = Settings.from_env()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
        "settings": {"engine_dtype": settings.engine_dtype, "new_tokens": args.new_tokens},
    }
    if args.baseline_only:
        baselines = {"transformers": bench_transformers(settings, args)}
        cpp = bench_llama_cpp(args)
        if cpp is not None:
            baselines["llama_cpp"] = cpp
        args.out.write_text(json.dumps(baselines))
        return
    print("measuring our engine ...", flush=True)
    results["ours"] = bench_ours(settings, args)
    if args.ours_only:
        print(json.dumps(results["ours"], indent=2))
        return
    print("measuring transformers generate (subprocess) ...", flush=True)
    results.update(run_baselines(args))
    results["machine"]["omp_wait_policy"] = {
        "ours": os.environ.get("OMP_WAIT_POLICY"),
        "baseline": OMP_WAIT_POLICY_BEFORE or "(unset: libgomp default)",
    }
    print("measuring process memory ...", flush=True)
    results["memory"] = measure_rss()
    print(table(results, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
