"""Stale-cassette warnings in replay: a cassette recorded from other weights, tokenizer or chat template than the
configured model's local copy (when there is one: CI has none, and then nothing is said)."""

from __future__ import annotations

from pathlib import Path

from ._model import local_model
from ._session import StaleCassetteWarning, stale_message, stale_parts
from ._settings import Settings

_UNKNOWN = object()


class StaleCheck:
    """One per run: the model's local directory (a Hub id is looked up once, lazily) and its fingerprints."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model_dir: object = _UNKNOWN
        self._fingerprints: dict[Path, dict] = {}

    def model_dir(self) -> Path | None:
        """The configured model's local directory for staleness checks."""
        settings = self.settings
        if settings.model_path is not None:
            return settings.model_path
        if self._model_dir is _UNKNOWN:
            found = None
            if settings.model_spec and settings.model_base:
                found = local_model(settings.model_spec, settings.model_origin, settings.model_base)
            self._model_dir = found
        return self._model_dir  # type: ignore[return-value]

    def fingerprints(self, model_path: Path) -> dict:
        if model_path not in self._fingerprints:
            from chatstream.cassettes.fingerprint import fingerprint_model_dir

            self._fingerprints[model_path] = fingerprint_model_dir(model_path)
        return self._fingerprints[model_path]

    def warning(self, cassette: Path, manifest: dict, nodeid: str) -> StaleCassetteWarning | None:
        """The warning for ``nodeid``'s cassette when it is stale, else None."""
        settings = self.settings
        model_dir = self.model_dir()
        if model_dir is None or not model_dir.is_dir():
            return None  # no local model to compare with (CI): nothing to say
        changed = stale_parts(manifest, self.fingerprints(model_dir), model_dir)
        if not changed:
            return None
        hub_id = settings.model_path is None  # found in the HF cache: the Hub id says more than the snapshot
        shown = settings.model_spec if hub_id and settings.model_spec else str(model_dir)
        message = stale_message(cassette, changed, shown, nodeid, settings.model_origin == "chatstream_model_path")
        return StaleCassetteWarning(message)
