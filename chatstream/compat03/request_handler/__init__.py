"""The ChatStream 0.3 module path of the request handlers (they live in chatstream.serving.turn, with the chat turn).

``AbstractRequestHandler.process_request(request, request_body, streaming_finished_callback)`` returns
the streaming response of an admitted chat request; ``generate`` streams an answer in the 0.3 format.
"""

from ...serving.turn import (
    DISCONNECTED_BEFORE_STREAMING,
    DISCONNECTED_WHILE_STREAMING,
    GENERATION_ERROR,
    REGENERATION_KEY,
    SUCCESS,
    AbstractRequestHandler,
    SimpleSessionRequestHandler,
    TurnContext,
    check_prompt_fits,
    close_open_answer,
)

__all__ = [
    "DISCONNECTED_BEFORE_STREAMING", "DISCONNECTED_WHILE_STREAMING", "GENERATION_ERROR", "REGENERATION_KEY", "SUCCESS",
    "AbstractRequestHandler", "SimpleSessionRequestHandler", "TurnContext", "check_prompt_fits",
    "close_open_answer",
]
