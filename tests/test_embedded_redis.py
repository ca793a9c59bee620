"""The embedded Redis: started on demand, shared, and persistent across restarts."""

from phobos.redis_server import EmbeddedRedis


def test_data_survives_a_restart(tmp_path) -> None:
    first = EmbeddedRedis(tmp_path)
    assert first.ensure_running()
    import redis

    redis.Redis.from_url(first.url).set("phobos:test", "kept")
    first.stop()
    assert not first.is_running()

    second = EmbeddedRedis(tmp_path)
    assert second.ensure_running()
    try:
        assert redis.Redis.from_url(second.url).get("phobos:test") == b"kept"
    finally:
        second.stop()


def test_a_second_process_reuses_the_running_server(tmp_path) -> None:
    owner = EmbeddedRedis(tmp_path)
    owner.ensure_running()
    try:
        other = EmbeddedRedis(tmp_path)
        assert other.ensure_running() is False  # found, not started
        assert other.url == owner.url
        other.stop()  # not the owner: must not stop the shared server
        assert owner.is_running()
    finally:
        owner.stop()


def test_deep_state_dirs_get_a_short_socket_path(tmp_path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(deep)
    assert len(str(server.socket_path)) <= 100
