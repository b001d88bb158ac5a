"""ChatStream 0.3's ``chatstream.util_create_streaming_response``: its helper is gone (see below)."""

from ._removed import removed_names

__getattr__ = removed_names(__name__, {
    "create_streaming_response": "ChatStream streams answers itself (chatstream.serving._http's "
                                 "ChatStreamingResponse, each chunk ending in DEFAULT_FINISH_TOKEN); for a "
                                 "fixed text, return a starlette StreamingResponse of it, or use "
                                 "ChatStream(mock_params=...).",
})
