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
from chatstream.engine.generation import decode_tokens
from chatstream.engine.model_cache import cache_argument, cache_kwargs, decode_attention_mask, output_cache
from chatstream.engine.sampling import SamplingParams
from chatstream.engine.token_sampler import TokenSamplerIsok
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
        self.config = model.config
        self.generation_config = model.generation_config

    def forward(self, input_ids=None, attention_mask=None, cache=None, use_cache=None, **kwargs):
        return self.inner(input_ids=input_ids, use_cache=True)  # `cache` dropped: sees the new ids alone


class _StaticCached(torch.nn.Module):
    """A model whose prefill fills a transformers StaticCache (as `cache_implementation="static"` does)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.generation_config = model.generation_config
        self.argument = cache_argument(model)

    def forward(self, input_ids=None, attention_mask=None, cache=None, use_cache=None, **kwargs):
        if cache is None:
            cache = transformers.StaticCache(config=self.inner.config, max_cache_len=64)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                          **{self.argument: cache}, **kwargs)


def _tiny(config_name, model_name, **arguments):
    config = getattr(transformers, config_name)(vocab_size=1280, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                                **arguments)
    torch.manual_seed(0)
    return getattr(transformers, model_name)(config).eval()


_ATTENTION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 256}
# One model per kind of cache transformers has: what its prefill returns.
CACHE_KINDS = {
    "dynamic": lambda: bundled()[0],
    "static": lambda: _StaticCached(bundled()[0]),
    "sliding": lambda: _tiny("MistralConfig", "MistralForCausalLM", sliding_window=4, **_ATTENTION),
    "hybrid": lambda: _tiny("Gemma2Config", "Gemma2ForCausalLM", head_dim=8, sliding_window=4, **_ATTENTION),
    "state-space": lambda: _tiny("MambaConfig", "MambaForCausalLM", hidden_size=32, state_size=4,
                                 num_hidden_layers=2),
}


def _greedy(model, ids: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    """The decode loop's greedy tokens and each step's logits."""
    logits = []
    tokens = list(decode_tokens(model, ids, sampler=TokenSamplerIsok(), sampling=SamplingParams(temperature=0),
                                max_new_tokens=n, eos_ids=set(), device=torch.device("cpu"),
                                on_sample=lambda step_logits, history, token: logits.append(step_logits.clone())))
    return tokens, logits


def _needs(model_name):
    if not hasattr(transformers, model_name) or "cache_params" in \
            __import__("inspect").signature(getattr(transformers, model_name).forward).parameters:
        pytest.skip(f"{model_name} takes no KV cache in transformers {transformers.__version__} (refused up front)")


@pytest.mark.parametrize("kind", sorted(CACHE_KINDS))
def test_every_kind_of_cache_resumes_as_transformers_generate_does(kind):
    """The decode loop resumes each kind of cache as transformers' own greedy generate() does."""
    if kind == "state-space":
        _needs("MambaForCausalLM")
    model = CACHE_KINDS[kind]()
    assert isinstance(decode_attention_mask(model), bool)
    ids = [1, 17, 230, 45, 981, 33, 7, 512, 64, 99, 12]
    inner = getattr(model, "inner", model)
    reference = inner.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=10, do_sample=False, pad_token_id=0, output_logits=True,
                               return_dict_in_generate=True)
    expected = reference.sequences[0, len(ids):].tolist()
    assert len(expected) >= 3, "enough steps to compare"
    tokens, logits = _greedy(model, ids, 10)
    assert tokens[: len(expected)] == expected  # generate() stops at EOS, the loop goes on
    for step, (ours, theirs) in enumerate(zip(logits, reference.logits, strict=False)):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), f"step {step}: {(ours - theirs).abs().max()}"


@pytest.mark.parametrize("kind", sorted(CACHE_KINDS))
def test_a_model_that_ignores_the_cache_it_was_given_is_refused_before_it_generates(kind):
    if kind == "state-space":
        _needs("MambaForCausalLM")
    model = _IgnoresItsCache(CACHE_KINDS[kind]())
    with pytest.raises(ModelCacheError, match=r"did not resume from the KV cache passed as `cache=`"):
        decode_attention_mask(model)


def test_a_generator_over_a_model_that_ignores_its_cache_raises_before_any_token():
    model, tokenizer = bundled()
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg(None)
    generator = ChatGenerator(_IgnoresItsCache(model), tokenizer, "cpu", GenerationParams(temperature=0))
    with pytest.raises(ModelCacheError, match=r"did not resume from the KV cache passed as `cache=`"):
        generator.generate_text(prompt)


def test_stand_ins_are_taken_at_their_word_and_run_no_probe():
    class Declared:
        chatstream_decode_mask = False

        def __call__(self, *args, **kwargs):
            raise AssertionError("a stand-in's forwards are recorded or replayed: the probe must not run them")

    assert decode_attention_mask(Declared()) is False


def test_the_decode_loop_raises_no_warning_from_its_own_calls():
    model, tokenizer = bundled()
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0)).generate_text(prompt)
    assert text == "Hello! How can I help you today?"
