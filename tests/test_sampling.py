import math

import pytest
import torch

from chatstream.engine.sampling import (
    PresenceFrequencyPenaltyProcessor,
    RepetitionPenaltyProcessor,
    SamplingParams,
    TemperatureProcessor,
    TopKProcessor,
    TopPProcessor,
    apply_processors,
    build_processors,
    sample_from_scores,
    top_logprobs,
)
from chatstream.exceptions import ConfigurationError

NEG_INF = -math.inf


def scores_of(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float32)


def ids_of(*ids: int) -> torch.Tensor:
    return torch.tensor([ids], dtype=torch.long)


def test_multiplicative_penalty_is_sign_aware():
    scores = scores_of(2.0, -2.0, 1.0, -1.0)
    out = RepetitionPenaltyProcessor(2.0, "multiplicative")(ids_of(0, 1), scores)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]


def test_subtractive_penalty_subtracts_once_per_seen_token():
    scores = scores_of(2.0, -2.0, 1.0)
    out = RepetitionPenaltyProcessor(0.5, "subtractive")(ids_of(0, 0, 1), scores)
    assert out.tolist() == [[1.5, -2.5, 1.0]]


def test_penalty_with_empty_history_changes_nothing():
    scores = scores_of(1.0, 2.0)
    out = RepetitionPenaltyProcessor(1.5)(torch.empty((1, 0), dtype=torch.long), scores)
    assert out.tolist() == scores.tolist()
    assert out.data_ptr() != scores.data_ptr()


def test_temperature_divides():
    out = TemperatureProcessor(0.5)(ids_of(0), scores_of(1.0, -3.0))
    assert out.tolist() == [[2.0, -6.0]]


def test_top_k_keeps_k_highest():
    out = TopKProcessor(2)(ids_of(0), scores_of(1.0, 4.0, 3.0, 2.0))
    assert out.tolist() == [[NEG_INF, 4.0, 3.0, NEG_INF]]


def test_top_k_larger_than_vocab_keeps_all():
    out = TopKProcessor(10)(ids_of(0), scores_of(1.0, 2.0))
    assert out.tolist() == [[1.0, 2.0]]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = TopPProcessor(0.8)(ids_of(0), probs.log())
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    out = TopPProcessor(0.81)(ids_of(0), probs.log())
    assert torch.isfinite(out).tolist() == [[True, True, True, False]]


def test_top_p_always_keeps_the_most_likely_token():
    out = TopPProcessor(0.01)(ids_of(0), scores_of(0.0, 5.0, 1.0))
    assert torch.isfinite(out).tolist() == [[False, True, False]]


@pytest.mark.parametrize(
    "processor",
    [RepetitionPenaltyProcessor(1.3), RepetitionPenaltyProcessor(0.2, "subtractive"), TemperatureProcessor(0.7),
     TopKProcessor(2), TopPProcessor(0.5), PresenceFrequencyPenaltyProcessor(0.5, 0.25)],
    ids=lambda p: type(p).__name__,
)
def test_processors_never_modify_their_input(processor):
    scores = scores_of(0.5, -1.0, 2.0, 3.0)
    ids = ids_of(0, 2)
    before, ids_before = scores.clone(), ids.clone()
    out = processor(ids, scores)
    assert torch.equal(scores, before)
    assert torch.equal(ids, ids_before)
    assert out.data_ptr() != scores.data_ptr()


def test_build_processors_order_and_skips():
    params = SamplingParams(temperature=0.7, top_k=10, top_p=0.9, repetition_penalty=1.1)
    kinds = [type(p) for p in build_processors(params, vocab_size=100)]
    assert kinds == [RepetitionPenaltyProcessor, TemperatureProcessor, TopKProcessor, TopPProcessor]


def test_build_processors_leaves_out_no_ops():
    assert build_processors(SamplingParams(temperature=1.0, top_k=None, top_p=1.0, repetition_penalty=1.0)) == []
    assert build_processors(SamplingParams(top_k=50), vocab_size=50) == []
    subtractive_zero = SamplingParams(repetition_penalty=0.0, repetition_penalty_method="subtractive", top_k=None)
    assert build_processors(subtractive_zero) == []


def test_greedy_keeps_only_penalty():
    kinds = [type(p) for p in build_processors(SamplingParams(temperature=0, repetition_penalty=1.2))]
    assert kinds == [RepetitionPenaltyProcessor]


def test_top_k_and_top_p_both_apply():
    params = SamplingParams(top_k=3, top_p=0.6)
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    out = apply_processors(build_processors(params, 4), ids_of(0), probs.log())
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]


def test_greedy_sampling_is_argmax():
    tokens, probs = sample_from_scores(scores_of(0.1, 3.0, 2.0), greedy=True)
    assert tokens.tolist() == [1]
    assert probs is None


def test_sampling_respects_masked_tokens():
    generator = torch.Generator().manual_seed(0)
    scores = scores_of(NEG_INF, 0.0, NEG_INF)
    draws = {int(sample_from_scores(scores, False, generator)[0]) for _ in range(20)}
    assert draws == {1}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temperature": -0.1}, "`temperature` (=-0.1)"),
        ({"temperature": float("nan")}, "`temperature`"),
        ({"top_k": 0}, "`top_k` (=0) must be an integer >= 1; use None"),
        ({"top_k": 2.5}, "`top_k` (=2.5)"),
        ({"top_p": 0.0}, "`top_p` (=0.0) must be a number in (0, 1]"),
        ({"top_p": 1.5}, "`top_p` (=1.5)"),
        ({"repetition_penalty": 0.0}, "`repetition_penalty` (=0.0) must be a number in [0.0001, 10000.0]"),
        ({"repetition_penalty": -1.0, "repetition_penalty_method": "subtractive"},
         "in [0, 10000.0] with the subtractive"),
        ({"repetition_penalty_method": "divide"}, "`repetition_penalty_method` (='divide') must be one of"),
        ({"presence_penalty": 2.5}, "`presence_penalty` (=2.5) must be a number in [-2.0, 2.0]"),
        ({"frequency_penalty": "1"}, "`frequency_penalty` (='1') must be a number"),
        ({"frequency_penalty": float("inf")}, "`frequency_penalty` (=inf)"),
    ],
)
def test_invalid_values_raise_teaching_errors(kwargs, fragment):
    with pytest.raises(ValueError) as excinfo:
        SamplingParams(**kwargs)
    assert fragment in str(excinfo.value)
    assert isinstance(excinfo.value, ConfigurationError)


def test_temperature_processor_refuses_zero_and_points_to_greedy():
    with pytest.raises(ValueError, match="greedy"):
        TemperatureProcessor(0)


def test_presence_penalty_subtracts_once_per_distinct_seen_token():
    out = PresenceFrequencyPenaltyProcessor(presence_penalty=0.5)(ids_of(0, 0, 2), scores_of(1.0, 1.0, -1.0, 2.0))
    assert out.tolist() == [[0.5, 1.0, -1.5, 2.0]]


def test_frequency_penalty_subtracts_per_occurrence_and_both_add_up():
    out = PresenceFrequencyPenaltyProcessor(frequency_penalty=0.25)(ids_of(0, 0, 2), scores_of(1.0, 1.0, 0.0))
    assert out.tolist() == [[0.5, 1.0, -0.25]]
    both = PresenceFrequencyPenaltyProcessor(1.0, 0.25)(ids_of(1, 1, 1), scores_of(0.0, 2.0))
    assert both.tolist() == [[0.0, 0.25]]
    negative = PresenceFrequencyPenaltyProcessor(-1.0)(ids_of(0), scores_of(0.0, 0.0))
    assert negative.tolist() == [[1.0, 0.0]], "a negative penalty encourages repeats"


def test_presence_frequency_penalties_come_after_repetition_penalty_and_only_when_set():
    params = SamplingParams(temperature=0.5, top_k=None, repetition_penalty=1.2, presence_penalty=0.1)
    kinds = [type(p) for p in build_processors(params)]
    assert kinds == [RepetitionPenaltyProcessor, PresenceFrequencyPenaltyProcessor, TemperatureProcessor]
    assert [type(p) for p in build_processors(SamplingParams(temperature=0, frequency_penalty=0.3))] == [
        PresenceFrequencyPenaltyProcessor], "penalties shape greedy decoding too"
    assert build_processors(SamplingParams(top_k=None, presence_penalty=0.0, frequency_penalty=0.0)) == []


def test_sampling_params_dict_leaves_unset_additive_penalties_out():
    assert "presence_penalty" not in SamplingParams().to_dict(), "cassette sample keys stay what they were"
    data = SamplingParams(frequency_penalty=0.5).to_dict()
    assert data["frequency_penalty"] == 0.5 and "presence_penalty" not in data
    assert SamplingParams(**data) == SamplingParams(frequency_penalty=0.5)


def test_top_logprobs_are_log_softmax_of_the_scores():
    scores = scores_of(0.0, math.log(3.0), NEG_INF)
    chosen, top = top_logprobs(scores, 0, 2)
    assert chosen == pytest.approx(math.log(0.25))
    assert [token for token, _ in top] == [1, 0]
    assert top[0][1] == pytest.approx(math.log(0.75))
    assert top_logprobs(scores, 2, 0) == (NEG_INF, [])
