"""Cassettes: the format, recording (probe mode), replay, verify, fingerprints and the ``chatstream cassette``
tool. Replay never imports the recorder; none of it imports serving."""
