"""pytest plugin for ChatStream: record model cassettes with ``pytest --probe``, replay them in CI."""
