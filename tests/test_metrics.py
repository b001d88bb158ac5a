from pathlib import Path

import pytest
from _probe_support import bundled
from prometheus_client.parser import text_string_to_metric_families

from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.generation import ChatGenerator
from chatstream.engine.mock_generator import ChatGeneratorMock
from chatstream.serving.metrics import Metrics, Outcome, RejectReason, source_of

ROOT = Path(__file__).resolve().parent.parent


def scrape(metrics: Metrics) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape."""
    families = text_string_to_metric_families(metrics.render().decode())
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_request_is_timed_and_counted():
    clock = Clock()
    metrics = Metrics(source="replay", running=lambda: 2, waiting=lambda: 5, clock=clock)
    timer = metrics.request("openai")
    clock.now += 0.5
    timer.token()
    clock.now += 0.1
    timer.token(2)
    clock.now += 0.4
    timer.finish(Outcome.SUCCESS, prompt_tokens=7)
    timer.finish(Outcome.ERROR)  # once only
    got = scrape(metrics)
    src = ("source", "replay")
    assert got[("chatstream_requests_total", frozenset({("endpoint", "openai"), ("outcome", "success"), src}))] == 1
    assert not any(k[0] == "chatstream_requests_total" and ("outcome", "error") in k[1] for k in got)
    assert got[("chatstream_prompt_tokens_total", frozenset({src}))] == 7
    assert got[("chatstream_generation_tokens_total", frozenset({src}))] == 3
    assert got[("chatstream_time_to_first_token_seconds_sum", frozenset({("endpoint", "openai"), src}))] == 0.5
    itl = frozenset({("endpoint", "openai"), src})
    assert got[("chatstream_inter_token_latency_seconds_count", itl)] == 1
    assert got[("chatstream_inter_token_latency_seconds_sum", itl)] == pytest.approx(0.05)
    assert got[("chatstream_e2e_request_latency_seconds_sum", itl)] == pytest.approx(1.0)
    assert got[("chatstream_num_requests_running", frozenset({src}))] == 2
    assert got[("chatstream_num_requests_waiting", frozenset({src}))] == 5


def test_rejections_and_disconnects_by_reason_and_stage():
    metrics = Metrics()
    metrics.count_rejection("chat_stream", RejectReason.QUEUE_FULL)
    metrics.count_outcome("chat_stream", Outcome.REJECTED)
    metrics.request("chat_stream").finish(Outcome.DISCONNECTED_BEFORE_STREAMING)
    timer = metrics.request("openai")
    timer.token()
    timer.finish(Outcome.DISCONNECTED_WHILE_STREAMING)
    got = scrape(metrics)
    live = ("source", "live")
    assert got[("chatstream_request_rejections_total",
                frozenset({("endpoint", "chat_stream"), ("reason", "queue_full"), live}))] == 1
    for endpoint, stage in (("chat_stream", "queued"), ("openai", "streaming")):
        assert got[("chatstream_client_disconnects_total",
                    frozenset({("endpoint", endpoint), ("stage", stage), live}))] == 1
    with pytest.raises(ValueError):
        metrics.count_outcome("openai", "finished-ish")


def test_each_instance_has_its_own_registry():
    one, two = Metrics(), Metrics()
    one.count_outcome("openai", Outcome.SUCCESS)
    assert b"chatstream_requests_total{" in one.render() and b"chatstream_requests_total{" not in two.render()


def test_source_tells_replay_mock_and_live_apart(tmp_path):
    cassette = next((ROOT / "fixtures" / "version-cassettes").iterdir())
    mock = MockTransformer.from_path(cassette)
    replaying = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", token_sampler=mock.get_token_sampler())
    assert source_of(replaying) == "replay"
    model, tokenizer = bundled()
    assert source_of(ChatGenerator(model, tokenizer, "cpu")) == "live"
    assert source_of(ChatGeneratorMock()) == "mock"
    assert source_of(object()) == "live"
    with pytest.raises(ValueError, match="source"):
        Metrics(source="recorded")


def _metrics_client(**kwargs):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from chatstream.serving.chat_stream import ChatStream

    chat_stream = ChatStream(use_mock_response=True, **kwargs)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"include": ["openai", "metrics"]})
    return TestClient(app)


def test_metrics_are_open_without_a_metrics_key_even_with_an_api_key():
    with _metrics_client(api_key="api-secret") as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/models").status_code == 401


def test_a_metrics_key_guards_metrics_with_a_bearer_token():
    with _metrics_client(api_key="api-secret", metrics_key="scrape-secret") as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "chatstream" not in refused.text and refused.json()["error"] == "unauthorized"
        assert client.get("/metrics", headers={"Authorization": "Bearer api-secret"}).status_code == 401
        allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert allowed.status_code == 200 and "chatstream_" in allowed.text


@pytest.mark.parametrize("key", ["", 3])
def test_a_metrics_key_must_be_a_non_empty_string(key):
    from chatstream.exceptions import ConfigurationError
    from chatstream.serving.chat_stream import ChatStream

    with pytest.raises(ConfigurationError, match="metrics_key"):
        ChatStream(use_mock_response=True, metrics_key=key)
