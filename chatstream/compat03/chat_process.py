"""ChatStream 0.3's ``chatstream.chat_process``: ``ChatGenerator`` is today's (chatstream.engine.generation),
with 0.3's constructor ``ChatGenerator(model, tokenizer, device, params)``."""

from ..engine.generation import ChatGenerator
from ._removed import removed_names

_TOKFLOW = ("0.3's settings of its tokflow output replacement, which is no longer a dependency; a request "
            "handler's get_replacement_when_output is applied to the whole answer so far (docs/migration-0.3.md).")

__getattr__ = removed_names(__name__, {
    "UPDATE_RESPONDER_TOKEN_ONE_BY_ONE": "the history is updated once, when the turn ends (commit or roll back, "
                                         "chatstream.serving.turn).",
    "condition_for_updated_text": _TOKFLOW,
    "condition_for_response_text": _TOKFLOW,
})

__all__ = ["ChatGenerator"]
