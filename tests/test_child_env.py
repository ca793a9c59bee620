"""The file-reading child holds no secret and reaches no network (core/child_process.py).

Run with ``-s`` to see the child's environment as the tests print it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from core.child_process import ALLOWED_ENV, start_isolated
from core.pdf_sandbox import ParseLimits, SandboxedPdf

SECRETS = {"SLACK_BOT_TOKEN": "xoxb-probe-secret", "SLACK_APP_TOKEN": "xapp-probe-secret",
           "DISCORD_TOKEN": "discord-probe-secret", "OPENAI_API_KEY": "sk-probe-secret",
           "HF_TOKEN": "hf_probe_secret", "REDIS_URL": "redis://:probe-secret@redis:6379/0"}
# Lines of text enough to fill the pipe to the parent: the child blocks writing them, so it is alive to inspect.
BIG_TEXT = (("word " * 200 + "\n\n") * 5000).encode()
PROBE = """
import os, socket, sys
print("ENV", sorted(os.environ.items()))
for family, address in ((socket.AF_INET, ("127.0.0.1", int(sys.argv[1]))), (socket.AF_UNIX, sys.argv[2])):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(address)
        print("CONNECTED", family.name)
    except OSError as exc:
        print("REFUSED", family.name, exc.errno)
"""


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    yield SECRETS


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.decode().partition("=") for item in f.read().split(b"\0") if item]
    return {name: value for name, _, value in pairs}


def _seccomp_mode(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("Seccomp:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and seccomp are Linux")
def test_the_reader_child_holds_no_secret_and_is_off_the_network(secrets_in_env: dict[str, str]) -> None:
    with SandboxedPdf(BIG_TEXT, "big.txt", ParseLimits(), kind="txt") as pdf:
        pid = pdf._process.pid
        environ = _environ(pid)  # read from /proc while the child waits for us to take its pages
        print(f"\nreader child pid {pid}, network isolation: {pdf.network_isolation}")
        for name, value in sorted(environ.items()):
            print(f"  {name}={value}")
        assert set(environ) <= {*ALLOWED_ENV, "MALLOC_ARENA_MAX"}
        leaked = [name for name, value in environ.items() if any(s in value for s in secrets_in_env.values())]
        assert leaked == [] and not set(secrets_in_env) & set(environ)
        assert pdf.network_isolation.startswith("seccomp")
        assert _seccomp_mode(pid) == "2"  # a filter
        if "netns" in pdf.network_isolation:
            assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        pages = list(pdf.pages())
    assert len(pages) == 5000  # the filter does not get in the way of reading


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp and namespaces are Linux")
def test_a_socket_connect_in_the_isolated_child_fails(secrets_in_env: dict[str, str], tmp_path: object) -> None:
    unix_path = os.path.join(str(tmp_path), "listener.sock")
    with socket.create_server(("127.0.0.1", 0)) as tcp, socket.socket(socket.AF_UNIX) as unix:
        unix.bind(unix_path)
        unix.listen()
        port = tcp.getsockname()[1]
        process, layers = start_isolated([sys.executable, "-c", PROBE, str(port), unix_path],
                                         stdout=subprocess.PIPE)
        out, _ = process.communicate(timeout=60)
        text = out.decode()
        print(f"\nisolation: {layers}\n{text}")
        assert process.returncode == 0
        assert "CONNECTED" not in text
        assert "REFUSED AF_INET" in text and "REFUSED AF_UNIX" in text
        for listener in (tcp, unix):
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):  # nobody ever knocked
                listener.accept()
    assert not any(value in text for value in secrets_in_env.values())


def test_the_child_environment_is_an_allow_list(secrets_in_env: dict[str, str]) -> None:
    from core.child_process import allowed_environment

    env = allowed_environment({"EXTRA": "1"})
    assert env["EXTRA"] == "1" and "PATH" in env
    assert not set(secrets_in_env) & set(env)


@pytest.mark.parametrize(("role", "kept"), [
    ("worker", {"HF_TOKEN", "OPENAI_API_KEY", "REDIS_URL"}),
    ("slack", {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "REDIS_URL"}),
    ("discord", {"DISCORD_TOKEN", "REDIS_URL"}),
    ("console", {"REDIS_URL"}),
    ("anything-else", set()),
])
def test_each_child_of_phobos_up_gets_only_its_roles_secrets(secrets_in_env: dict[str, str], role: str,
                                                             kept: set[str]) -> None:
    from phobos.child_env import environment_for, secret_names

    assert set(SECRETS) <= secret_names()
    env = environment_for(role, {"PHOBOS_METRICS_PORT": "0"})
    print(f"{role}: secrets kept {sorted(set(SECRETS) & set(env))}")
    assert set(SECRETS) & set(env) == kept
    assert env["PHOBOS_METRICS_PORT"] == "0" and env["PATH"] == os.environ["PATH"]

