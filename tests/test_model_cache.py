"""The KV-cache argument: `cache` (transformers >= 5.24) or `past_key_values`, read from the model's signature."""

import warnings
from types import SimpleNamespace

import pytest
import torch
import transformers
from _probe_support import bundled
from packaging.version import Version

from chatstream import ChatGenerator, ChatPromptFromTemplate, GenerationParams, ModelCacheError
from chatstream.cassettes.replay import MockCache, MockCausalLMOutput
from chatstream.engine.model_cache import cache_argument, cache_kwargs, check_cache_kept, output_cache
from chatstream.exceptions import ConfigurationError

NEW_NAME = Version(transformers.__version__) >= Version("5.24.0.dev0")


def test_the_bundled_model_takes_the_name_its_transformers_version_declares():
    model, _ = bundled()
    assert cache_argument(model) == ("cache" if NEW_NAME else "past_key_values")


def test_output_cache_reads_the_declared_field_without_touching_the_deprecated_alias(monkeypatch):
    model, _ = bundled()
    out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    if NEW_NAME:  # 5.24 keeps `past_key_values` as a property that logs a deprecation: it must not be read
        def alias(self):
            raise AssertionError("output_cache read the deprecated past_key_values alias")

        monkeypatch.setattr(transformers.utils.ModelOutput, "past_key_values", property(alias))
        with pytest.raises(AssertionError):
            out.past_key_values  # noqa: B018 - the patched alias is in force
    cache = output_cache(out)
    assert cache is not None and cache.get_seq_length() == 3


def test_output_cache_reads_plain_objects_and_the_mock_output_under_either_name():
    old = SimpleNamespace(logits=None, past_key_values="old")
    new = SimpleNamespace(logits=None, cache="new")
    assert output_cache(old) == "old" and output_cache(new) == "new"
    mock_cache = MockCache()
    mock = MockCausalLMOutput(torch.zeros(1, 1, 4), mock_cache)
    assert output_cache(mock) is mock_cache and mock.past_key_values is mock_cache


def test_cache_kwargs_finds_the_cache_under_either_name():
    assert cache_kwargs({"cache": 1}) == 1 and cache_kwargs({"past_key_values": 2}) == 2
    assert cache_kwargs({}) is None


def test_signatures_decide_the_name_and_kwargs_only_forwards_keep_the_old_one():
    class New:
        def forward(self, input_ids, attention_mask=None, cache=None, **kwargs): ...

    class Old:
        def forward(self, input_ids, attention_mask=None, past_key_values=None, **kwargs): ...

    class KwargsOnly:
        def forward(self, **kwargs): ...

    assert cache_argument(New()) == "cache"
    assert cache_argument(Old()) == "past_key_values"
    assert cache_argument(KwargsOnly()) == "past_key_values"


def test_a_state_space_cache_argument_is_refused_with_what_to_do():
    class Mamba523:
        def forward(self, input_ids, attention_mask=None, cache_params=None, **kwargs): ...

    with pytest.raises(ConfigurationError, match=r"`cache_params`.*upgrade transformers to >= 5\.24"):
        cache_argument(Mamba523())


class _IgnoresItsCache(torch.nn.Module):
    """A real model whose forward names `cache` but drops it, as transformers <= 5.23 drops an unknown
    `cache=` keyword into **kwargs: the wrong-name trap the decode loop must catch."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.generation_config = model.generation_config

    def forward(self, input_ids=None, attention_mask=None, cache=None, use_cache=None, **kwargs):
        return self.inner(input_ids=input_ids, use_cache=True)  # `cache` dropped: sees the new ids alone


def test_a_model_that_ignores_the_cache_it_was_given_is_caught_at_the_first_decode_step():
    model, tokenizer = bundled()
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg(None)
    generator = ChatGenerator(_IgnoresItsCache(model), tokenizer, "cpu", GenerationParams(temperature=0))
    with pytest.raises(ModelCacheError, match=r"ignored the KV cache passed as `cache=`.*holds 1 positions, not"):
        generator.generate_text(prompt)


def test_check_cache_kept_passes_a_cache_of_the_right_length_and_one_that_cannot_say():
    model, _ = bundled()
    out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    check_cache_kept(model, "cache", output_cache(out), 3)
    check_cache_kept(model, "cache", object(), 3)  # no get_seq_length: nothing to check
    with pytest.raises(ModelCacheError):
        check_cache_kept(model, "cache", output_cache(out), 4)


def test_the_decode_loop_raises_no_warning_from_its_own_calls():
    model, tokenizer = bundled()
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0)).generate_text(prompt)
    assert text == "Hello! How can I help you today?"
