"""Serving: ChatStream, the chat turn, admission, sessions, client roles, the HTTP APIs (0.3's and OpenAI's),
metrics, the web page, the CLI and the app factory. The only layer that imports fastapi or starlette."""
