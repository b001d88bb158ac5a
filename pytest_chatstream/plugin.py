"""pytest surface of pytest_chatstream (options, markers, fixtures, hooks); filled in by the plugin work."""
