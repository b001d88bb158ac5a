"""ChatStream 0.3's ``chatstream.util_request_id``: its debug-log request tag is gone (see below)."""

from ._removed import removed_names

__getattr__ = removed_names(__name__, {
    "req_id": "ChatStream no longer tags log lines with a request id; log your own (the session is "
              "request.state.session when the app adds a session middleware).",
})
