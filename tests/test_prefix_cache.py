"""The prefix cache (chatstream.engine.prefix_cache): a turn prefills only its new tokens, answers do not change.

Greedy conversations give the same text with the cache on and off (ChatGenerator and the batched engine,
the bundled model, sliding-window and state-space models, the real model); stored entries are never
written through; the budget holds; recording and replay cross cache on / off both ways.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import itertools
import os
from pathlib import Path

import pytest
import torch
import transformers
from _probe_support import bundled

from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.events import FinishEvent
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.model_cache import cache_argument, output_cache
from chatstream.engine.prefix_cache import PrefixCache, copy_prefix
from chatstream.exceptions import ConfigurationError

GREEDY = GenerationParams(top_k=1, max_new_tokens=16, context_len=4096)
SYSTEM = "You are a helpful assistant. Answer briefly and kindly."


def real_model_dir() -> Path:
    return Path(os.environ.get("CHATSTREAM_REAL_MODEL",
                               Path.home() / ".cache" / "chatstream" / "smollm2-135m-instruct"))


def converse(generator, tokenizer, turns: int, params: GenerationParams = GREEDY,
             system: str = SYSTEM) -> list[tuple[str, int, int]]:
    """(answer, prompt tokens, cached tokens) of each turn of a conversation that keeps its answers."""
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.set_system(system)
    out = []
    for i in range(turns):
        prompt.add_requester_msg(f"Question {i}: tell me about the number {i * 7}.")
        prompt.add_responder_msg(None)
        text, finish = "", None
        for event in generator.events(prompt, params):
            text += event.text
            if isinstance(event, FinishEvent):
                finish = event
        prompt.set_responder_last_msg(text)
        out.append((text, finish.prompt_tokens, finish.cached_tokens))
    return out


def _dynamic_cache(model, ids):
    with torch.inference_mode():
        return output_cache(model(input_ids=torch.tensor([ids]), use_cache=True))


# -- the cache itself --------------------------------------------------------------------------------------


def test_take_gives_the_longest_prefix_as_a_private_copy_and_leaves_one_id_to_prefill():
    model, _ = bundled()
    cache = PrefixCache(budget_mb=64)
    stored = _dynamic_cache(model, [5, 6, 7, 8, 9])
    before = stored.layers[0].keys.clone()
    cache.store([5, 6, 7, 8, 9], stored)
    assert cache.take([1, 2, 3]) == (None, 0)
    copy, n = cache.take([5, 6, 7, 40, 41])
    assert n == 3 and copy.get_seq_length() == 3 and copy is not stored
    whole, n = cache.take([5, 6, 7, 8, 9])  # the whole prompt is cached: its last id is still prefilled
    assert n == 4
    with torch.inference_mode():  # decoding into the copy leaves the stored entry as it was
        model(input_ids=torch.tensor([[9, 10]]), use_cache=True, **{cache_argument(model): whole})
    assert whole.get_seq_length() == 6 and torch.equal(stored.layers[0].keys, before)
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.reused_tokens, stats.computed_tokens) == (2, 1, 7, 3 + 2 + 1)


def test_a_prompt_that_continues_a_whole_entry_takes_the_entry_itself_and_it_leaves_the_cache():
    """A session's next turn continues all of its stored history: the entry is handed over, not copied, and
    no later request can reach it (so no other stream ever shares what this one decodes into)."""
    model, _ = bundled()
    cache = PrefixCache(budget_mb=64)
    stored = _dynamic_cache(model, [5, 6, 7, 8, 9])
    cache.store([5, 6, 7, 8, 9], stored)
    other = _dynamic_cache(model, [5, 6, 30, 31])
    cache.store([5, 6, 30, 31], other)
    taken, n = cache.take([5, 6, 7, 8, 9, 10, 11])
    assert n == 5 and taken is stored and cache.stats.entries == 1
    assert cache.stats.bytes == sum(t.nbytes for layer in other.layers for t in (layer.keys, layer.values))
    # the same prompt again finds only the other entry's shared [5, 6], as a private copy
    again, n = cache.take([5, 6, 7, 8, 9, 10, 11])
    assert n == 2 and again is not other and again.get_seq_length() == 2


def test_a_live_entry_costs_no_copy_until_taken_and_its_copy_is_the_streams_prefix():
    """A running stream offers its prompt (``store_live``): nothing is copied when nobody reuses it; a request
    that does gets a private copy of the stream's first positions, equal to a whole prefill of them, however
    far the stream has decoded on; ``forget`` ends the offer."""
    model, _ = bundled()
    cache = PrefixCache(budget_mb=64)
    prompt = [5, 6, 7, 8, 9]
    running = _dynamic_cache(model, prompt)
    copies = []

    def copy_first(n):
        copies.append(n)
        return copy_prefix(running, n)

    key = cache.store_live(prompt, running, copy_first)
    assert key is not None and copies == [] and cache.stats.bytes == 0 and cache.stats.entries == 1
    with torch.inference_mode():  # the stream decodes on into its own cache
        model(input_ids=torch.tensor([[9, 10, 11]]), use_cache=True, **{cache_argument(model): running})
    taken, n = cache.take([5, 6, 7, 8, 40])
    assert (n, copies) == (4, [4]) and taken is not running
    whole = _dynamic_cache(model, prompt[:4])
    for mine, reference in zip(taken.layers, whole.layers, strict=True):
        torch.testing.assert_close(mine.keys, reference.keys)
    again, n = cache.take(prompt)  # the same prompt (another choice of an n > 1 request): still a copy
    assert n == 4 and again is not running and cache.stats.entries == 1
    cache.forget(key)
    assert cache.take([5, 6, 7, 8, 40]) == (None, 0) and cache.stats.entries == 0
    cache.forget(key)  # twice, or after the entry went: nothing happens


def test_a_live_entry_never_stands_in_for_a_store_and_a_finished_history_replaces_it():
    model, _ = bundled()
    cache = PrefixCache(budget_mb=64)
    running = _dynamic_cache(model, [5, 6, 7, 8, 9])
    key = cache.store_live([5, 6, 7, 8, 9], running, lambda n: copy_prefix(running, n))
    shorter = _dynamic_cache(model, [5, 6, 7])
    cache.store([5, 6, 7], shorter)  # a live entry may end without leaving its cache: this one is kept
    assert cache.stats.entries == 2 and cache.stats.bytes > 0
    finished = _dynamic_cache(model, [5, 6, 7, 8, 9, 10, 11])
    cache.store([5, 6, 7, 8, 9, 10, 11], finished)  # the stream's whole history covers both
    assert cache.stats.entries == 1
    cache.forget(key)
    assert cache.stats.entries == 1


def test_a_cache_whose_positions_decoding_may_rewrite_is_copied_at_once():
    """A sliding-window layer drops its oldest positions as it decodes on: its prompt is copied when offered."""
    model = _gemma2_sliding()
    cache = PrefixCache(budget_mb=64)
    running = _dynamic_cache(model, [5, 6, 7, 8, 9])
    assert cache.store_live([5, 6, 7, 8, 9], running, lambda n: pytest.fail("a live copy of a sliding cache")) is None
    assert cache.stats.entries == 1 and cache.stats.bytes > 0


def test_a_batched_stream_leaves_no_live_entry_behind():
    """Even when its finished history is not kept (here: larger than the budget), which would have replaced it."""
    model, tokenizer = bundled()
    generator = BatchedChatGenerator(model, tokenizer, "cpu", GREEDY, capacity=2, prefix_cache_mb=0.001)
    try:
        for question in ("What is a cat?", "And a dog?"):
            prompt = ChatPromptFromTemplate(tokenizer)
            prompt.set_system(SYSTEM)
            prompt.add_requester_msg(question)
            prompt.add_responder_msg(None)
            list(generator.events(prompt, GREEDY))
        assert generator.prefix_cache.stats.entries == 0
    finally:
        generator.close()


def test_the_budget_is_never_exceeded_and_the_least_recently_used_goes_first():
    model, _ = bundled()
    one = copy_prefix(_dynamic_cache(model, list(range(10, 30))), 20)
    size = sum(t.nbytes for layer in one.layers for t in (layer.keys, layer.values))
    cache = PrefixCache(budget_mb=2.5 * size / 2**20)  # room for two entries
    for first in (100, 200):
        cache.store(list(range(first, first + 20)), _dynamic_cache(model, list(range(first, first + 20))))
    assert cache.take(list(range(100, 110)))[1] == 9  # 100.. is now the most recently used
    cache.store(list(range(300, 320)), _dynamic_cache(model, list(range(300, 320))))
    stats = cache.stats
    assert stats.entries == 2 and stats.evictions == 1 and stats.bytes <= stats.budget_bytes
    assert cache.take(list(range(200, 210)))[1] == 0 and cache.take(list(range(100, 110)))[1] == 9
    # twice the size, and covers 100..119 (dropped, not evicted): 300.. is evicted to make room
    cache.store(list(range(100, 140)), _dynamic_cache(model, list(range(100, 140))))
    stats = cache.stats
    assert stats.entries == 1 and stats.evictions == 2 and stats.bytes <= stats.budget_bytes
    assert cache.take(list(range(100, 150)))[1] == 40


def test_zero_turns_it_off_and_a_bad_budget_is_refused():
    model, tokenizer = bundled()
    off = ChatGenerator(model, tokenizer, "cpu", GREEDY, prefix_cache_mb=0)
    assert [cached for *_, cached in converse(off, tokenizer, 3)] == [0, 0, 0]
    for bad in (-1, "64", True):
        with pytest.raises(ConfigurationError, match="prefix_cache_mb"):
            ChatGenerator(model, tokenizer, "cpu", GREEDY, prefix_cache_mb=bad)


# -- same answers, fewer prefilled tokens ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ChatGenerator, BatchedChatGenerator])
def test_a_ten_turn_greedy_conversation_is_the_same_with_the_cache_on_and_off(kind):
    model, tokenizer = bundled()
    on = converse(kind(model, tokenizer, "cpu", GREEDY), tokenizer, 10)
    off = converse(kind(model, tokenizer, "cpu", GREEDY, prefix_cache_mb=0), tokenizer, 10)
    assert [text for text, *_ in on] == [text for text, *_ in off]
    assert on[0][2] == 0 and all(cached > 0 for *_, cached in on[1:])
    # each later turn prefills about its new tokens only: the previous prompt and answer come from the cache
    for (_, prompt_before, _), (_, prompt, cached) in itertools.pairwise(on):
        assert prompt_before < cached < prompt


def test_split_prefill_logits_agree_with_a_whole_prefill_within_verify_tolerance():
    from chatstream.cassettes.verify import TOLERANCES

    model, tokenizer = bundled()
    ids = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": "What is a cat?"}], add_generation_prompt=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    rtol, atol = TOLERANCES["float32"]
    with torch.inference_mode():
        whole = model(input_ids=torch.tensor([ids])).logits[0, -1]
        for split in (1, len(ids) // 2, len(ids) - 1):
            head = _dynamic_cache(model, ids[:split])
            part = model(input_ids=torch.tensor([ids[split:]]), use_cache=True, **{cache_argument(model): head},
                         attention_mask=torch.ones((1, len(ids)), dtype=torch.long)).logits[0, -1]
            assert torch.allclose(part, whole, rtol=rtol, atol=atol), float((part - whole).abs().max())


def test_concurrent_sessions_sharing_a_system_prompt_share_its_prefix_and_answer_as_alone():
    model, tokenizer = bundled()
    questions = ["What is a cat?", "Name a colour.", "Say hello.", "What is two plus two?"]

    def ask(generator, question):
        prompt = ChatPromptFromTemplate(tokenizer)
        prompt.set_system(SYSTEM)
        prompt.add_requester_msg(question)
        prompt.add_responder_msg(None)
        events = list(generator.events(prompt, GREEDY))
        return "".join(e.text for e in events), events[-1].cached_tokens

    alone = {q: ask(ChatGenerator(model, tokenizer, "cpu", GREEDY, prefix_cache_mb=0), q)[0] for q in questions}
    for kind in (ChatGenerator, BatchedChatGenerator):
        generator = kind(model, tokenizer, "cpu", GREEDY, **({"capacity": 4} if kind is BatchedChatGenerator else {}))
        ask(generator, "Hi.")  # the system prompt is now cached
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = dict(zip(questions, pool.map(lambda q, g=generator: ask(g, q), questions), strict=True))
        assert {q: text for q, (text, _) in answers.items()} == alone
        assert all(cached >= len(tokenizer(SYSTEM)["input_ids"]) for _, cached in answers.values())


@pytest.mark.parametrize("kind", [ChatGenerator, BatchedChatGenerator])
def test_a_prompt_is_reusable_as_soon_as_its_first_token_is_sent(kind):
    """A request that arrives while another with the same prompt is still decoding prefills one token."""
    model, tokenizer = bundled()
    generator = kind(model, tokenizer, "cpu", GREEDY)
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.set_system(SYSTEM)
    prompt.add_requester_msg("What is a cat?")
    prompt.add_responder_msg(None)
    first = generator.events(prompt, GREEDY)
    started = next(first)  # prefilled, first token sent; still decoding
    second = list(generator.events(prompt, GREEDY))
    rest = [started, *first]
    assert second[-1].cached_tokens == second[-1].prompt_tokens - 1 and rest[-1].cached_tokens == 0
    assert "".join(e.text for e in second) == "".join(e.text for e in rest)


def _gemma2_sliding():
    config = transformers.Gemma2Config(vocab_size=1280, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                       max_position_embeddings=512, sliding_window=16, bos_token_id=1,
                                       eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.Gemma2ForCausalLM(config).eval()


def _mamba():
    importlib.import_module("transformers.models.mamba")
    config = transformers.MambaConfig(vocab_size=1280, hidden_size=32, state_size=4, num_hidden_layers=2,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.MambaForCausalLM(config).eval()


@pytest.mark.parametrize("build", [_gemma2_sliding, _mamba], ids=["sliding-window-hybrid", "state-space"])
def test_sliding_window_and_state_space_caches_reuse_whole_entries_or_stay_uncached(build, caplog):
    """A sliding layer past its window (and a running state) cannot be cut: only a prompt that extends the
    whole cached history reuses it; the answers are those without the cache."""
    _, tokenizer = bundled()
    model = build()
    try:
        on = ChatGenerator(model, tokenizer, "cpu", GREEDY)
    except ConfigurationError as error:  # a transformers release whose mamba takes `cache_params`
        assert "state-space" in str(error)
        return
    with caplog.at_level("INFO", logger="chatstream"):
        cached = converse(on, tokenizer, 4)
    plain = converse(ChatGenerator(model, tokenizer, "cpu", GREEDY, prefix_cache_mb=0), tokenizer, 4)
    assert [t for t, *_ in cached] == [t for t, *_ in plain]
    refused = [r for r in caplog.records if "not caching" in r.getMessage()]
    assert len(refused) <= 1  # logged once, not per request
    if build is _mamba:
        assert refused and "state-space" in refused[0].getMessage() and not any(c for *_, c in cached)
    else:  # past its 16-token window by the second turn: a turn whose prompt extends the whole previous
        # history (prompt and generated ids) reuses all of it; a random model's answer may not re-tokenize to the
        # ids it generated (then its next turn prefills everything), but not on every turn
        assert not refused and any(c > 16 for *_, c in cached[1:])
        assert all(c == 0 or c > 16 for *_, c in cached)  # never a cut inside the window


# -- recording and replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("record_mb, replay_mb", [(None, 0), (0, None)], ids=["hits-replayed-without",
                                                                            "none-replayed-with-hits"])
def test_a_cassette_recorded_with_cache_hits_replays_without_them_and_the_reverse(tmp_path, record_mb, replay_mb):
    model, tokenizer = bundled()
    with ProbeRecorder(tmp_path / "c") as recorder:
        m, t, s = recorder.wrap(model, tokenizer)
        recorded = converse(ChatGenerator(m, t, "cpu", GREEDY, s, prefix_cache_mb=record_mb), t, 4)
    mock = MockTransformer.from_path(tmp_path / "c")
    generator = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", GREEDY, mock.get_token_sampler(),
                              prefix_cache_mb=replay_mb)
    replayed = converse(generator, mock.get_tokenizer(), 4)
    assert [t for t, *_ in replayed] == [t for t, *_ in recorded]
    assert any(c for *_, c in (recorded if record_mb is None else replayed))


def test_a_batched_recording_with_cache_hits_replays_batched():
    model, tokenizer = bundled()
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        with ProbeRecorder(Path(directory) / "c") as recorder:
            m, t, s = recorder.wrap(model, tokenizer)
            recorded = converse(BatchedChatGenerator(m, t, "cpu", GREEDY, s), t, 3)
        mock = MockTransformer.from_path(Path(directory) / "c")
        replayed = converse(BatchedChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", GREEDY,
                                                 mock.get_token_sampler()), mock.get_tokenizer(), 3)
    assert replayed == recorded and recorded[2][2] > 0


# -- the real model ----------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_model_ten_turns_same_text_with_the_cache_on_and_off():
    path = real_model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"the real model is not built at {path} (tools/real_model.py; CHATSTREAM_REAL_MODEL)")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    params = GREEDY.replace(max_new_tokens=24)
    on = converse(ChatGenerator(model, tokenizer, "cpu", params), tokenizer, 10, params)
    off = converse(ChatGenerator(model, tokenizer, "cpu", params, prefix_cache_mb=0), tokenizer, 10, params)
    assert [t for t, *_ in on] == [t for t, *_ in off]
    assert all(c > 0 for *_, c in on[1:])


# -- serving: the OpenAI usage and /metrics ----------------------------------------------------------------


@pytest.mark.parametrize("batching", [False, True])
async def test_a_resent_openai_history_reports_cached_tokens_and_the_metrics_count_them(batching):
    import httpx
    from fastapi import FastAPI
    from prometheus_client.parser import text_string_to_metric_families

    from chatstream.serving.chat_stream import ChatStream
    from pytest_chatstream import lifespan

    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", temperature=0, max_new_tokens=12,
                             batching=batching)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is a cat?"}]
    usages = []
    async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                base_url="http://testserver") as http:
        for question in ("Name a colour.", "Say hello."):
            reply = (await http.post("/v1/chat/completions", json={"model": "tiny-chat", "messages": messages})).json()
            usages.append(reply["usage"])
            messages += [reply["choices"][0]["message"], {"role": "user", "content": question}]
        metrics = {sample.name: sample.value for family in text_string_to_metric_families(
            (await http.get("/metrics")).text) for sample in family.samples if "prefix_cache" in sample.name}
    assert usages[0]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = usages[1]["prompt_tokens_details"]["cached_tokens"]
    assert usages[0]["prompt_tokens"] < cached < usages[1]["prompt_tokens"]
    assert metrics["chatstream_prefix_cache_hits_total"] == 1 and metrics["chatstream_prefix_cache_misses_total"] == 1
    assert metrics["chatstream_prefix_cache_reused_prompt_tokens_total"] == cached
    assert metrics["chatstream_prefix_cache_computed_prompt_tokens_total"] == (
        usages[0]["prompt_tokens"] + usages[1]["prompt_tokens"] - cached)
    assert 0 < metrics["chatstream_prefix_cache_bytes"] <= metrics["chatstream_prefix_cache_budget_bytes"]


def test_history_trimming_keeps_a_stable_start_so_a_long_conversation_keeps_hitting_the_cache():
    """Past context_len, turns are dropped in steps of half the turns that fit: most turns still extend the
    previous prompt (cache hits), instead of every turn dropping one more turn and missing."""
    model, tokenizer = bundled()
    params = GREEDY.replace(context_len=200, max_new_tokens=12)
    turns = converse(ChatGenerator(model, tokenizer, "cpu", params), tokenizer, 16, params)
    assert max(prompt for _, prompt, _ in turns) + 12 <= 200
    trimmed_from = next(i for i, (_, prompt, _) in enumerate(turns) if i and prompt < turns[i - 1][1])
    misses = [i for i, (*_, cached) in enumerate(turns) if i and cached <= len(tokenizer(SYSTEM)["input_ids"])]
    assert trimmed_from < 10 and len(misses) <= (16 - trimmed_from) // 2, (trimmed_from, misses)
    plain = converse(ChatGenerator(model, tokenizer, "cpu", params, prefix_cache_mb=0), tokenizer, 16, params)
    assert [t for t, *_ in turns] == [t for t, *_ in plain]
