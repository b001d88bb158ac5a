"""``chatstream cassette``: each command run as a subprocess, its text, its JSON and its exit code."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from _probe_support import ask, bundled

from chatstream.bundled import bundled_model_path
from chatstream.cassettes import cassette as fmt
from chatstream.cassettes._unused_report import UNUSED_REPORT_NAME, write_unused_report
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.token_sampler import TokenSamplerIsok

PARAMS = GenerationParams(max_new_tokens=10, temperature=1.2, seed=21)


def _record(path, params=PARAMS, fidelity="exact"):
    """One conversation of two turns, then a second conversation of one turn."""
    model, tokenizer = bundled()
    with ProbeRecorder(path, fidelity=fidelity) as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
        # no prefix cache: verify reruns each answer with a whole prefill, which a recording whose prefixes came
        # from the prefix cache matches within tolerance (float rounding), not byte for byte
        generator = ChatGenerator(m, t, "cpu", params, s, prefix_cache_mb=0)
        first = generator.generate_text(ask(t, "Hello"))
        generator.generate_text(ask(t, "Hello", first, "Do you like cats?"))
        recorder.flush()
        generator.generate_text(ask(t, "How is the weather?"))
    return path


def cassette_cmd(*args):
    """Run ``chatstream cassette ARGS`` in a fresh interpreter; returns (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "chatstream.serving.cli", "cassette", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("tool") / "cassettes" / "suite" / "chat")


def _change_token(cassette, step):
    """Make the ``step``-th sample's token the least likely one (in recorded order)."""
    loaded = fmt.load_cassette(cassette)
    forwards = {f["s"]: f["logits"] for f in loaded.forwards()}
    target = list(loaded.samples())[step]
    for meta in sorted(cassette.glob("segment-*.json")):
        document = json.loads(meta.read_text())
        for sample in document["samples"]:
            if sample["s"] == target["s"]:
                sample["tok"] = int(torch.argmin(forwards[sample["lf"]].full()[0]))
                meta.write_text(json.dumps(document))
                return target["tok"], sample["tok"]
    raise AssertionError(f"no sample {step}")


def test_list_shows_each_cassette_with_its_facts(recorded):
    code, out, _ = cassette_cmd("list", recorded.parent.parent)
    assert code == 0
    assert "suite/chat" in out and "on cpu (float32)" in out and "exact" in out
    assert "2 conversation(s), 3 answer(s)" in out and out.rstrip().endswith("1 cassette(s) under " +
                                                                             str(recorded.parent.parent))
    code, out, _ = cassette_cmd("list", recorded.parent.parent, "--json")
    row = json.loads(out)["cassettes"][0]
    assert code == 0 and row["path"] == "suite/chat" and row["answers"] == 3 and row["conversations"] == 2
    assert row["bytes"] == sum(p.stat().st_size for p in recorded.iterdir()) and row["device"] == "cpu"
    import transformers

    assert row["transformers"] == transformers.__version__ and row["fidelity"] == "exact"


def test_list_marks_a_damaged_cassette_and_exits_3(recorded, tmp_path):
    broken = shutil.copytree(recorded, tmp_path / "dir" / "broken")
    next(broken.glob("segment-*.safetensors")).write_bytes(b"garbage")
    code, out, _ = cassette_cmd("list", tmp_path / "dir")
    assert code == 3 and "broken" in out and "DAMAGED" in out and "sha256" in out


def test_show_prints_each_conversation_as_text(recorded):
    model, tokenizer = bundled()
    generator = ChatGenerator(model, tokenizer, "cpu", PARAMS, TokenSamplerIsok(seed=1))
    answer = generator.generate_text(ask(tokenizer, "Hello"))
    code, out, _ = cassette_cmd("show", recorded, "--json")
    data = json.loads(out)
    assert code == 0 and [len(c["turns"]) for c in data["conversations"]] == [2, 1]
    first, second = data["conversations"][0]["turns"]
    assert "Hello" in first["prompt"] and first["answer_text"] == answer and first["seed"] == 21
    assert second["prompt"].startswith("…") and "Do you like cats?" in second["prompt"]
    assert "Hello" not in second["prompt"]  # only what the turn added
    assert first["params"]["temperature"] == 1.2 and data["facts"]["fidelity"] == "exact"
    code, text, _ = cassette_cmd("show", recorded)
    assert code == 0 and f"answer: {answer!r}" in text and "conversation 2:" in text


def test_diff_of_two_identical_recordings_is_identical(recorded, tmp_path):
    again = _record(tmp_path / "again")
    code, out, _ = cassette_cmd("diff", recorded, again)
    assert code == 0 and out.rstrip().endswith("identical: 3 answer(s) compared")


def test_diff_names_the_first_differing_step_of_each_answer(recorded, tmp_path):
    other = shutil.copytree(recorded, tmp_path / "other")
    was, now = _change_token(other, 3)
    code, out, _ = cassette_cmd("diff", recorded, other, "--json")
    data = json.loads(out)
    assert code == 1 and data["status"] == "diverged"
    first = data["answers"][0]
    assert first["first_divergent_step"] == 3 and first["differs"] == "token"
    assert (first["recorded_token"], first["live_token"]) == (was, now)
    assert [a["status"] for a in data["answers"][1:]].count("identical") >= 2  # the other answers still match
    code, text, _ = cassette_cmd("diff", recorded, other)
    assert code == 1 and f"step 3: A token {was}" in text


def test_diff_of_recordings_with_other_seeds_reports_answers_on_one_side_only(recorded, tmp_path):
    other = _record(tmp_path / "seed22", params=PARAMS.replace(seed=22))
    code, out, _ = cassette_cmd("diff", recorded, other, "--json")
    sides = [a["side"] for a in json.loads(out)["answers"]]
    assert code == 1 and sides.count("a") == 3 and sides.count("b") == 3


def test_verify_reruns_the_answers_through_the_live_model(recorded, tmp_path):
    code, out, err = cassette_cmd("verify", recorded, "--model", bundled_model_path(), "--live-dir",
                                  tmp_path / "live")
    assert code == 0, err
    assert "identical: " in out and "steps compared" in out
    assert len(list(fmt.load_cassette(tmp_path / "live").samples())) == len(list(fmt.load_cassette(recorded).samples()))


def test_verify_exits_1_where_the_live_model_disagrees(recorded, tmp_path):
    edited = shutil.copytree(recorded, tmp_path / "edited")
    was, now = _change_token(edited, 2)
    code, out, _ = cassette_cmd("verify", edited, "--model", bundled_model_path(), "--json")
    data = json.loads(out)
    assert code == 1 and data["status"] == "diverged" and data["first_divergent_step"] == 2
    assert (data["recorded_token"], data["live_token"]) == (now, was)


def test_unreadable_inputs_exit_3_and_bad_arguments_exit_2(recorded, tmp_path):
    code, out, err = cassette_cmd("show", tmp_path / "absent", "--json")
    assert code == 3 and "no cassette directory" in err and json.loads(out)["exit_code"] == 3
    code, _, err = cassette_cmd("verify", recorded, "--model", tmp_path / "no-model")
    assert code == 3 and "--model" in err
    code, _, err = cassette_cmd("verify", recorded)
    assert code == 2 and "--model" in err


def test_prune_removes_only_what_the_report_lists_and_only_with_yes(recorded, tmp_path):
    base = tmp_path / "cassettes"
    for name in ("a/kept", "a/old", "b/old"):
        shutil.copytree(recorded, base / name)
    code, _, err = cassette_cmd("prune", base)
    assert code == 4 and "run a plain `pytest`" in err
    write_unused_report(base, ["a/old", "b/old", "gone", "../escape"])
    code, out, _ = cassette_cmd("prune", base)
    assert code == 0 and "would remove a/old" in out and "pass --yes" in out
    assert (base / "a/old").is_dir() and (base / UNUSED_REPORT_NAME).is_file()
    code, out, _ = cassette_cmd("prune", base, "--yes", "--json")
    data = json.loads(out)
    assert code == 0 and data["removed"] == ["a/old", "b/old"] and data["skipped"] == ["../escape", "gone"]
    assert (base / "a/kept").is_dir() and not (base / "a/old").exists() and not (base / "b").exists()
    assert not (base / UNUSED_REPORT_NAME).exists()


def test_prune_refuses_a_report_written_for_another_directory(recorded, tmp_path):
    write_unused_report(tmp_path / "one", ["x"])
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    code, _, err = cassette_cmd("prune", tmp_path / "two", "--yes")
    assert code == 4 and "was written for" in err


def _model_with_vocab(directory, vocab_size):
    """A one-layer random Llama of ``vocab_size`` tokens beside the bundled tokenizer's files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_model_path() / name, directory / name)
    return directory


@pytest.mark.parametrize("vocab_size", [2000, 500], ids=["larger", "smaller"])
def test_verify_with_a_model_of_another_vocabulary_says_so_and_exits_3(recorded, tmp_path, vocab_size):
    other = _model_with_vocab(tmp_path / "other", vocab_size)
    code, out, err = cassette_cmd("verify", recorded, "--model", other, "--json")
    assert code == 3, err
    assert "does not match the cassette" in err and f"the model's vocabulary has {vocab_size} tokens" in err
    assert "Traceback" not in err and json.loads(out)["exit_code"] == 3


def test_verify_of_a_folder_of_cassettes_names_one_instead_of_advising_a_rerecord(recorded):
    folder = recorded.parent.parent  # .../cassettes, holding suite/chat
    code, _, err = cassette_cmd("verify", folder, "--model", bundled_model_path())
    assert code == 3
    assert "is a folder of 1 cassette(s), not one cassette" in err and str(recorded) in err
    assert "re-record" not in err


def test_diff_names_the_two_recordings_a_and_b_not_recorded_and_live(recorded, tmp_path):
    other = shutil.copytree(recorded, tmp_path / "other")
    was, now = _change_token(other, 3)
    code, text, _ = cassette_cmd("diff", recorded, other)
    assert code == 1 and f"step 3: A token {was}" in text and f"B token {now}" in text
    assert "live" not in text and "recorded token" not in text
