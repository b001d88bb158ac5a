"""Models and prompts shared by the probe-mode / replay tests (not a test module)."""

from __future__ import annotations

import functools

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.token_sampler import TokenSampler

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.lru_cache(maxsize=1)
def bundled():
    """The bundled tiny chat model and its tokenizer (loaded once per process)."""
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def random_model(vocab_size: int, seed: int = 0):
    """A random 2-layer Llama with ``vocab_size`` ids and a character-level ChatML tokenizer that decodes them all."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(c) for c in range(32, 127)]
    words = specials + chars + [f"<w{i}>" for i in range(vocab_size - len(specials) - len(chars))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(s, special=True) for s in specials])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", bos_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab_size, bos_token_id=0, eos_token_id=2)
    return LlamaForCausalLM(config).eval(), tokenizer


def ask(tokenizer, *turns: str) -> ChatPromptFromTemplate:
    """A prompt holding ``turns`` (user, assistant, user, ...) and an open assistant turn."""
    prompt = ChatPromptFromTemplate(tokenizer)
    for i, turn in enumerate(turns):
        (prompt.add_requester_msg if i % 2 == 0 else prompt.add_responder_msg)(turn)
    prompt.add_responder_msg(None)
    return prompt


class Capture(TokenSampler):
    """A sampler that keeps a copy of the logits it was given, then lets ``inner`` choose."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def sample(self, logits, input_ids, params, generator=None):
        self.seen.append(logits.clone())
        return self.inner.sample(logits, input_ids, params, generator)
