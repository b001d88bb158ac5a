"""ChatStream 0.3's ``chatstream.chat_core``: its decode loop ``process_chat`` is gone (see below)."""

from ._removed import removed_names

__getattr__ = removed_names(__name__, {
    "process_chat": "the decode loop is chatstream.ChatGenerator (chatstream.engine.generation): "
                    "ChatGenerator(model, tokenizer, device, params).generate(chat_prompt) streams an answer, "
                    "and GenerationParams holds what 0.3's params dict held.",
    "sampling": "use chatstream.sampling_utils.sampling, or chatstream.engine.sampling.SamplingParams with a "
                "TokenSampler (chatstream.TokenSamplerIsok).",
})
