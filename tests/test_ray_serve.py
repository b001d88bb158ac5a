"""ChatStream on Ray Serve (``chatstream.serving.ray:build_app``): a local Ray head (loopback, 2 CPUs, no
dashboard) started here, 2 replicas of the bundled model sharing a SQLite session store, conversations
through Ray's HTTP proxy streaming like one ``chatstream serve``; Ray is shut down at the end."""

import pytest
from _servers import Replica, free_port
from test_replicas import GREEDY, conversation

from chatstream.exceptions import ConfigurationError

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'chatstream[ray]'; CI's locked "
                                        "leg installs it with `bash tools/setup.sh --ray`)")
serve = pytest.importorskip("ray.serve")
pytestmark = pytest.mark.ray


def test_options_become_deployment_options_and_serve_arguments():
    from chatstream.serving.cli import parse_serve_args
    from chatstream.serving.ray import build_app, deployment_options, serve_argv

    assert serve_argv({"session_secret": "s", "mock": "true", "batching": False, "temperature": 0}) == [
        "--session-secret", "s", "--mock", "--no-batching", "--temperature", "0"]
    args, _ = parse_serve_args(["--mock", "--concurrency", "3", "--queue-size", "4"])
    assert deployment_options({"num_replicas": "2", "num_cpus": "0.5", "num_gpus": "0.25"}, args) == {
        "max_ongoing_requests": 7, "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0.25}}
    scaled = deployment_options({"max_replicas": "4", "target_ongoing_requests": "2"}, args)
    assert scaled["num_replicas"] == "auto"
    assert scaled["autoscaling_config"] == {"max_replicas": 4, "target_ongoing_requests": 2.0}
    with pytest.raises(ConfigurationError, match="temperature"):
        build_app({"temperature": "hot"})


def test_two_replicas_behind_rays_proxy_serve_a_conversation_like_one_process(tmp_path):
    from chatstream.serving.ray import build_app

    store = f"sqlite://{tmp_path}/sessions.sqlite3"
    single = Replica(*GREEDY, "--session-store", "memory")
    try:
        expected = conversation([single.url])
    finally:
        single.stop()
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = dict(zip(GREEDY[0::2], GREEDY[1::2], strict=True))
        args = {key.lstrip("-").replace("-", "_"): value for key, value in args.items()}
        serve.run(build_app({**args, "session_store": store, "num_replicas": "2", "num_cpus": "0.5"}),
                  route_prefix="/", name="chatstream")
        url = f"http://127.0.0.1:{port}/"
        import httpx

        for _ in range(3):
            assert conversation([url]) == expected, "each turn may reach either replica"
        seen = {httpx.get(url + "health", timeout=30).json()["replica"] for _ in range(30)}
        assert len(seen) == 2, f"both replicas answered: {seen}"
    finally:
        serve.shutdown()
        ray.shutdown()
