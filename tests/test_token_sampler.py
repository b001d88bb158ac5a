import torch

from chatstream.engine.sampling import SamplingParams
from chatstream.engine.token_sampler import TokenSampler, TokenSamplerIsok, make_generator


def random_logits(seed: int = 1, vocab: int = 500) -> torch.Tensor:
    return torch.randn((1, vocab), generator=torch.Generator().manual_seed(seed))


def draw(sampler: TokenSampler, params: SamplingParams, steps: int, generator=None) -> list[int]:
    history = torch.tensor([[1, 2, 3]])
    tokens = []
    for step in range(steps):
        token = sampler.sample(random_logits(step), history, params, generator)
        tokens.append(token)
        history = torch.cat([history, torch.tensor([[token]])], dim=1)
    return tokens


def test_same_seed_same_tokens():
    params = SamplingParams(temperature=1.0, top_k=None, top_p=1.0)
    assert draw(TokenSamplerIsok(seed=42), params, 30) == draw(TokenSamplerIsok(seed=42), params, 30)


def test_different_seed_different_tokens():
    params = SamplingParams(temperature=1.0, top_k=None, top_p=1.0)
    assert draw(TokenSamplerIsok(seed=1), params, 30) != draw(TokenSamplerIsok(seed=2), params, 30)


def test_per_generation_generator_overrides_own_state():
    params = SamplingParams(temperature=0.8, top_k=20)
    sampler = TokenSamplerIsok(seed=7)
    draw(sampler, params, 5)  # advance the sampler's own generator
    first = draw(sampler, params, 20, make_generator(42))
    second = draw(sampler, params, 20, make_generator(42))
    assert first == second


def test_greedy_is_argmax_and_ignores_seed():
    params = SamplingParams(temperature=0)
    logits = random_logits(3)
    expected = int(logits.argmax())
    assert TokenSamplerIsok(seed=1).sample(logits, torch.tensor([[0]]), params) == expected
    assert TokenSamplerIsok(seed=2).sample(logits, torch.tensor([[0]]), params) == expected


def test_sampled_token_stays_within_top_k():
    params = SamplingParams(temperature=1.5, top_k=3)
    logits = random_logits(5)
    allowed = set(torch.topk(logits, 3).indices[0].tolist())
    sampler = TokenSamplerIsok(seed=0)
    assert {sampler.sample(logits, torch.tensor([[0]]), params) for _ in range(50)} <= allowed


def test_repetition_penalty_steers_greedy_away_from_repeat():
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    params = SamplingParams(temperature=0, repetition_penalty=1.5)
    assert TokenSamplerIsok().sample(logits, torch.tensor([[0]]), params) == 1


def test_make_generator_none_without_seed():
    assert make_generator(None) is None


def test_draw_seed_keeps_the_first_answer_and_derives_a_new_seed_per_regeneration():
    from chatstream.engine.token_sampler import draw_seed

    assert draw_seed(0, 1, 0) == 0 and draw_seed(7, 3, 0) == 7
    seeds = {draw_seed(0, turn, regeneration) for turn in (1, 2) for regeneration in (1, 2, 3)}
    assert len(seeds) == 6 and 0 not in seeds and all(0 <= s < 2**63 for s in seeds)
    assert draw_seed(0, 1, 1) == draw_seed(0, 1, 1) != draw_seed(1, 1, 1)
    assert draw_seed(None, 1, 1) is None
    assert draw_seed(0, 1, 1, SamplingParams(temperature=0)) == 0  # greedy: nothing is drawn
    assert draw_seed(0, 1, 1, SamplingParams(top_k=1)) == 0
    assert draw_seed(0, 1, 1, SamplingParams(temperature=0.7)) == draw_seed(0, 1, 1)
    torch.Generator().manual_seed(draw_seed(5, 9, 9))  # a seed torch takes
