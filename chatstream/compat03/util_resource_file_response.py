"""ChatStream 0.3's ``chatstream.util_resource_file_response``: its private page reader is gone (see below)."""

from ._removed import removed_names

__getattr__ = removed_names(__name__, {
    "_send_resource": "the chat page and its files are served by ChatStream.index and ChatStream.js "
                      "(chatstream.serving._webui; the files are in chatstream/web/).",
})
