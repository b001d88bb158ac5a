from pathlib import Path

import pytest
from _probe_support import bundled

from chatstream.cassettes import cassette as fmt
from chatstream.cassettes.probe import default_probe_parent, new_cassette_name, resolve_cassette_dir, start_probe
from chatstream.cassettes.recording import ProbeRecorder, RecordingModel, RecordingTokenizer, RecordingTokenSampler
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import ConfigurationError


def test_default_parent_is_the_env_var_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CHATSTREAM_PROBE_DIR", raising=False)
    assert default_probe_parent() == Path.home() / ".cache" / "chatstream" / "probe_data"
    monkeypatch.setenv("CHATSTREAM_PROBE_DIR", str(tmp_path))
    assert default_probe_parent() == tmp_path


def test_start_probe_records_into_a_new_timestamped_cassette(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATSTREAM_PROBE_DIR", str(tmp_path))
    model, tokenizer = bundled()
    m, t, s, recorder = start_probe(model, tokenizer, TokenSamplerIsok(seed=1), sampling={"temperature": 0.5})
    assert isinstance(recorder, ProbeRecorder) and recorder.fidelity == "compact"
    assert isinstance(m, RecordingModel) and isinstance(t, RecordingTokenizer) and isinstance(s, RecordingTokenSampler)
    assert recorder.path.parent == tmp_path and recorder.path.name[:8].isdigit()
    t("Hello", add_special_tokens=False)
    recorder.close()
    loaded = fmt.load_cassette(recorder.path)
    assert loaded.manifest["sampling"] == {"temperature": 0.5} and len(list(loaded.calls())) == 1
    _, _, _, second = start_probe(model, tokenizer, None)
    assert second.path != recorder.path and sorted([recorder.path.name, second.path.name])[0] == recorder.path.name
    second.close()


def test_start_probe_takes_parent_name_and_fidelity(tmp_path):
    model, tokenizer = bundled()
    *_, recorder = start_probe(model, tokenizer, None, parent_dir=tmp_path / "p", name="mine", fidelity="exact")
    assert recorder.path == tmp_path / "p" / "mine" and recorder.fidelity == "exact"
    assert (recorder.path / "manifest.json").is_file()
    recorder.close()


def test_new_names_are_unique_even_within_one_instant(tmp_path):
    first = new_cassette_name(tmp_path)
    (tmp_path / first).mkdir()
    assert new_cassette_name(tmp_path) != first


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "/abs/path", "", "  "])
def test_names_that_escape_the_parent_are_refused(tmp_path, name):
    with pytest.raises(ConfigurationError, match="cassette name"):
        resolve_cassette_dir(tmp_path, name)
    model, tokenizer = bundled()
    with pytest.raises(ConfigurationError, match="cassette name"):
        start_probe(model, tokenizer, None, parent_dir=tmp_path, name=name)


def test_nested_relative_names_stay_inside(tmp_path):
    assert resolve_cassette_dir(tmp_path, "suite/test_one") == tmp_path / "suite" / "test_one"
