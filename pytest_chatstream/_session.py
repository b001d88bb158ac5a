"""One test's cassette: replay it, record it (committed only if the test passes) or verify it.

The objects a test gets have the same three getters whatever the mode: ``MockTransformer`` in
replay, :class:`LiveTransformer` (the live model, tokenizer and sampler inside recording proxies)
under ``--probe``. Heavy modules (torch, the recorder, the replayer) are imported only here, when a
test needs them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._settings import Action
from ._staging import commit, discard, new_staging_dir


class StaleCassetteWarning(UserWarning):
    """A replayed cassette was recorded from a model whose local files have changed since."""


class LiveTransformer:
    """The recording stand-in for ``MockTransformer``: live objects behind the same getters."""

    def __init__(self, model: Any, tokenizer: Any, token_sampler: Any) -> None:
        self._model, self._tokenizer, self._token_sampler = model, tokenizer, token_sampler

    def get_model(self) -> Any:
        return self._model

    def get_tokenizer(self) -> Any:
        return self._tokenizer

    def get_token_sampler(self) -> Any:
        return self._token_sampler


def replay_transformer(cassette: Path) -> Any:
    """The MockTransformer that replays ``cassette`` (raises CassetteNotFound / CassetteError)."""
    from chatstream.cassettes.replay import MockTransformer

    return MockTransformer(parent_dir_path=cassette.parent, dirname=cassette.name, wait_sec=0)


def sampling_metadata(chatstream_config: dict) -> dict:
    """The sampling settings of ``chatstream_config`` (the fixture's) that a recorded manifest keeps."""
    from chatstream.engine.generation import GenerationParams

    fields = GenerationParams.__dataclass_fields__
    return {k: v for k, v in chatstream_config.items() if k in fields}


def stale_parts(manifest: dict, live_fingerprints: dict[str, str | None], model_dir: Path | None = None) -> list[str]:
    """Names of the fingerprints (weights, tokenizer, chat_template) that differ from the cassette's.

    ``model_dir`` (the directory ``live_fingerprints`` describe) lets a manifest written before
    weights were fingerprinted by content be compared the way it was made.
    """
    from chatstream.cassettes.fingerprint import same_weights

    recorded = manifest.get("fingerprints") or {}
    changed = []
    for name, value in live_fingerprints.items():
        if value is None or recorded.get(name) is None:
            continue
        same = same_weights(recorded[name], value, model_dir) if name == "weights" else recorded[name] == value
        if not same:
            changed.append(name)
    return sorted(changed)


def recorded_by(cassette: Path) -> str | None:
    """The node id of the test that recorded ``cassette`` (kept in its manifest), if any."""
    from chatstream.cassettes.cassette import MANIFEST_NAME

    manifest = json.loads((cassette / MANIFEST_NAME).read_text(encoding="utf-8"))
    return (manifest.get("extra") or {}).get("test")


def missing_message(nodeid: str, shown_path: str) -> str:
    return (
        f"no cassette for {nodeid} at {shown_path}; record it on a machine with the model: "
        f"pytest --probe=missing --probe-model=PATH {nodeid!r}"
    )


def stale_message(cassette: Path, changed: list[str], model: str | Path, nodeid: str,
                  model_in_ini: bool = False) -> str:
    """``model_in_ini``: the ini option names the model, so the re-record command need not."""
    option = "" if model_in_ini else f" --probe-model={model}"
    return (
        f"the cassette {cassette} is stale: the {', '.join(changed)} of {model} changed since it was "
        f"recorded. Re-record it: pytest --probe=all{option} {nodeid!r}"
    )


class CassetteRun:
    """A test recording or verifying its cassette through a ``ProbeRecorder``.

    ``RECORD`` writes into a staging directory beside the cassette and :meth:`finish` swaps it in
    only if the test passed. ``VERIFY`` writes into a temporary directory that :meth:`verify`
    compares with the cassette, and never touches the cassette. ``REPEAT`` writes into a temporary
    directory too, read back by :meth:`recorded_run`.
    """

    def __init__(self, cassette: Path, action: Action, fidelity: str, sampling: dict | None,
                 extra_metadata: dict | None) -> None:
        from chatstream.cassettes.recording import ProbeRecorder

        if action not in (Action.RECORD, Action.VERIFY, Action.REPEAT):
            raise ValueError(f"`action` (={action!r}) must be RECORD, VERIFY or REPEAT for a CassetteRun.")
        self.cassette = cassette
        self.action = action
        if action is Action.RECORD:
            self.target = new_staging_dir(cassette)
        else:
            self.target = Path(tempfile.mkdtemp(prefix=f"chatstream-{action.value}-"))
        self.recorder = ProbeRecorder(
            self.target, fidelity=fidelity, sampling=sampling, extra_metadata=extra_metadata
        )
        self._closed = False
        self._live_tokenizer: Any = None

    def wrap(self, model: Any, tokenizer: Any, token_sampler: Any) -> LiveTransformer:
        self._live_tokenizer = tokenizer  # unwrapped: decoding a token for the repeat table records nothing
        return LiveTransformer(*self.recorder.wrap(model, tokenizer, token_sampler))

    def close_recorder(self) -> None:
        if not self._closed:
            self._closed = True
            self.recorder.close()

    def verify(self, **tolerances: Any) -> dict:
        """Compare what the live model did in this test with the cassette; a ``VerifyResult`` dict."""
        from chatstream.cassettes.verify import compare_cassettes

        self.recorder.flush()
        result = compare_cassettes(self.cassette, self.target, **tolerances).to_dict()
        del result["live_dir"]  # a temporary directory, removed when the test ends: the report does not name it
        return result

    def recorded_run(self) -> tuple[list[list[int]], Any]:
        """What the live model generated so far in this test: each answer's tokens, and a token decoder."""
        from ._repeat import recorded_run

        self.recorder.flush()
        return recorded_run(self.target, self._live_tokenizer)

    def finish(self, passed: bool) -> int | None:
        """Close the recorder; for RECORD commit the cassette if ``passed`` (returns its size) else keep the old."""
        try:
            self.close_recorder()
        finally:
            if self.action is not Action.RECORD:
                shutil.rmtree(self.target, ignore_errors=True)
            elif not passed:
                discard(self.target)
        if self.action is Action.RECORD and passed:
            return commit(self.target, self.cassette)
        return None
