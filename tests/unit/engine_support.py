"""Test helpers for the engine: a tiny random-weight Llama folder and its tokenizer.

The tokenizer is the real SmolLM2 one when the model has been pulled (so the tests see
real byte-level BPE pieces), else a tiny byte-level BPE trained here with ``tokenizers``.
The weights are random but large enough (init std 0.2) that greedy choices are mostly
clear-cut: float noise between batch shapes on one CPU (~1e-5) does not flip them. With the
real tokenizer's 49k-token vocabulary, though, a reply's top-2 logit gap can be as small as
~3e-4, so a test that compares with another implementation (transformers) or another CPU
must accept either token at such a near-tie, and must not assume which bytes a reply ends
on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from chatbot.settings import Settings

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "Hello! How can I help you with your order today?",
    "Returns are accepted within 30 days of delivery. Café crème, naïve façade, 東京 ✓ 🎉",
    "Shipping takes 3-5 business days. Order #W2611340 shipped on Monday.",
    "The quick brown fox jumps over the lazy dog. 0123456789 $%&*()[]{}<>",
] * 20


def real_model_path() -> Path:
    """Where ``chatbot model pull`` puts the default model (by the default settings)."""
    return Settings.from_env().model_path


def make_tokenizer(dest: Path, *, tiny: bool = False) -> Any:
    """The SmolLM2 tokenizer if pulled (and not ``tiny``), else a tiny byte-level BPE.

    Saved into ``dest`` either way.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    real = real_model_path()
    if not tiny and (real / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(real))
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        core.train_from_iterator(_CORPUS, trainer)
        tok = PreTrainedTokenizerFast(
            tokenizer_object=core,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            unk_token="<|endoftext|>",
            pad_token="<|im_end|>",
        )
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(dest))
    return tok


def make_tiny_model(dest: Path, *, seed: int = 0, layers: int = 2) -> Path:
    """Save a random-weight Llama (GQA: 4 heads, 2 KV heads) plus tokenizer into ``dest``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(dest)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # random norms, so a wrong norm weight would show
                p.uniform_(0.5, 1.5)
        # A zero EOS embedding gives EOS a zero logit (tied head), so random replies run
        # to max_new_tokens; tests that need EOS name another token as EOS.
        model.model.embed_tokens.weight[tok.eos_token_id] = 0.0
    model.save_pretrained(str(dest), safe_serialization=True)
    return dest


def prompt_ids(tok: Any, system: str, user: str) -> list[int]:
    """Chat-template token ids for a system + user message, ready for a reply."""
    ids = tok.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": user}],
        add_generation_prompt=True,
        tokenize=True,
    )
    if not isinstance(ids, list):
        ids = ids["input_ids"]
    return [int(i) for i in ids]
