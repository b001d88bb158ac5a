import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from chatstream.bundled import bundled_model_path
from chatstream.engine.detokenizer import REPLACEMENT_CHAR, StreamingDetokenizer

CORPUS = ["hello world, how are you?", "STOP here", "こんにちは世界", "猫が好き 🐱🎉"]


@pytest.fixture(scope="module")
def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE: characters outside its merges are split into raw bytes."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


@pytest.fixture(scope="module")
def bundled_tokenizer():
    return AutoTokenizer.from_pretrained(bundled_model_path())


def stream(tokenizer, text: str, stop_strs=()) -> tuple[list[str], StreamingDetokenizer]:
    detok = StreamingDetokenizer(tokenizer, stop_strs)
    deltas = [detok.push(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    deltas.append(detok.finish())
    return deltas, detok


@pytest.mark.parametrize("text", ["hello world", "こんにちは、元気ですか？", "emoji 🐱🎉👍🏽 mixed 日本語 text"])
def test_deltas_rebuild_the_text_and_never_split_a_character(byte_tokenizer, text):
    deltas, detok = stream(byte_tokenizer, text)
    assert "".join(deltas) == text == detok.text
    assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_split_multibyte_character_is_held_until_complete(byte_tokenizer):
    ids = byte_tokenizer.encode("🐱", add_special_tokens=False)
    assert len(ids) > 1, "the test needs a character spread over several byte tokens"
    detok = StreamingDetokenizer(byte_tokenizer)
    assert [detok.push(i) for i in ids] == [""] * (len(ids) - 1) + ["🐱"]


def test_stop_string_cuts_text_and_is_never_emitted(byte_tokenizer):
    deltas, detok = stream(byte_tokenizer, "hello STOP here", stop_strs=["STOP"])
    assert detok.stopped
    assert "".join(deltas) == "hello "
    assert not any("S" in d for d in deltas)


def test_partial_stop_string_is_held_back_then_released(byte_tokenizer):
    detok = StreamingDetokenizer(byte_tokenizer, ["<bot>:"])
    emitted = ""
    for token in byte_tokenizer.encode("hi <bo", add_special_tokens=False):
        emitted += detok.push(token)
    assert emitted == "hi "  # "<bo" could still become "<bot>:"
    assert detok.finish() == "<bo"
    assert not detok.stopped


def test_stop_string_across_tokens_with_text_before(byte_tokenizer):
    deltas, detok = stream(byte_tokenizer, "how are you? STOP and more", stop_strs=["STOP", "NEVER"])
    assert "".join(deltas) == "how are you? "
    assert detok.push(byte_tokenizer.encode("x", add_special_tokens=False)[0]) == ""


@pytest.mark.parametrize("text", ["こんにちは！今日はどんなご用ですか？", "猫🐱が好きです🎉 and English too 👍"])
def test_bundled_tokenizer_japanese_and_emoji(bundled_tokenizer, text):
    deltas, _ = stream(bundled_tokenizer, text)
    assert "".join(deltas) == text
    assert not any(REPLACEMENT_CHAR in d for d in deltas)
    assert sum(1 for d in deltas if d) > 1, "text should arrive in several pieces"


def test_bundled_tokenizer_decodes_in_constant_windows(bundled_tokenizer):
    calls = []

    class CountingTokenizer:
        def decode(self, ids, **kwargs):
            calls.append(len(ids))
            return bundled_tokenizer.decode(ids, **kwargs)

    text = "こんにちは！今日はどんなご用ですか？ " * 20
    ids = bundled_tokenizer.encode(text, add_special_tokens=False)
    detok = StreamingDetokenizer(CountingTokenizer())
    out = "".join(detok.push(i) for i in ids) + detok.finish()
    assert out == text
    assert max(calls) <= 12, "each decode covers a short window, not the whole response"
