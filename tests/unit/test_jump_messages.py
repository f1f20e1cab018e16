"""Which jump hosts a route goes through, what a failing one is called in errors, what is retried."""

import asyncio
from pathlib import Path

import asyncssh
import pytest

from slurmbatch.transport._connect import explain, is_throttling, is_unreachable
from slurmbatch.transport._route import JumpFailed, ProxyCommandFailed, RouteError, load_route
from slurmbatch.transport.settings import ConnectSettings

LOGIN = ConnectSettings(host="cluster", ssh_config=())
JUMP = ConnectSettings(host="bastion", port=2222, user="me", ssh_config=())


def refused_forwarding() -> JumpFailed:
    error = asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed")
    return JumpFailed(JUMP, None, error, forwarding_to="login1:22")


def test_refused_forwarding_names_the_jump_host_and_the_destination() -> None:
    error = explain(LOGIN, None, refused_forwarding())
    message = str(error)
    assert "the jump host bastion:2222 refused to forward the connection to login1:22" in message
    assert "AllowTcpForwarding no" in message
    assert error.host == "cluster"
    assert isinstance(error.cause, asyncssh.ChannelOpenError)


def test_a_jump_host_that_cannot_reach_the_login_node_says_so() -> None:
    failure = JumpFailed(
        JUMP,
        None,
        asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Connection refused"),
        forwarding_to="login1:22",
    )
    message = str(explain(LOGIN, None, failure))
    assert "bastion:2222 could not connect to login1:22 (Connection refused)" in message
    # The jump host works: the login node behind it may come back, as after a reboot.
    assert is_unreachable(failure)
    assert not is_throttling(failure)
    assert not is_unreachable(refused_forwarding())


def test_a_jump_host_refusing_the_login_is_described_as_that_host() -> None:
    failure = JumpFailed(JUMP, None, asyncssh.PermissionDenied("no"))
    message = str(explain(LOGIN, None, failure))
    assert "the jump host failed" in message
    assert "bastion:2222 refused to log in user 'me'" in message
    assert not is_unreachable(failure)


def test_retries_follow_the_jump_hosts_own_failure() -> None:
    assert is_unreachable(JumpFailed(JUMP, None, ConnectionRefusedError()))
    assert is_throttling(JumpFailed(JUMP, None, asyncssh.ConnectionLost("mid-handshake")))


def test_a_proxy_command_that_ends_is_named_and_not_blamed_on_max_startups() -> None:
    failure = ProxyCommandFailed(["ssh", "-W", "%h:%p", "bastion"], asyncssh.ConnectionLost("closed"))
    message = str(explain(LOGIN, None, failure))
    assert "ProxyCommand 'ssh -W %h:%p bastion' ended before the SSH handshake finished" in message
    assert "MaxStartups" not in message
    assert not is_throttling(failure)


def test_a_route_that_cannot_be_followed_is_explained() -> None:
    message = str(explain(LOGIN, None, RouteError("ProxyJump 'a,,b' has an empty hop")))
    assert message == "cannot connect to cluster:22: ProxyJump 'a,,b' has an empty hop"


def route_hops(tmp_path: Path, config: str, host: str) -> list[str]:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    settings = ConnectSettings(host=host, ssh_config=(str(path),), verify_host_key=False)
    route = asyncio.run(load_route(settings))
    return [str(hop.written) for hop in route.jumps]


def test_the_first_hops_own_proxy_jump_is_followed_as_openssh_does(tmp_path: Path) -> None:
    config = (
        "Host login\n    ProxyJump inner\n"
        "Host inner\n    HostName 10.0.0.2\n    ProxyJump outer\n"
        "Host outer\n    HostName 10.0.0.1\n"
    )
    assert route_hops(tmp_path, config, "login") == ["outer", "inner"]


def test_later_hops_of_a_chain_are_reached_through_the_hop_before(tmp_path: Path) -> None:
    config = "Host login\n    ProxyJump me@a:2200,b\nHost b\n    ProxyJump elsewhere\n"
    assert route_hops(tmp_path, config, "login") == ["me@a:2200", "b"]


def test_proxy_jump_none_and_no_proxy_jump_mean_direct(tmp_path: Path) -> None:
    assert route_hops(tmp_path, "Host login\n    ProxyJump none\n", "login") == []
    assert route_hops(tmp_path, "Host login\n    HostName 10.0.0.3\n", "login") == []


def test_jump_hosts_naming_each_other_are_refused_in_plain_words(tmp_path: Path) -> None:
    config = "Host login\n    ProxyJump a\nHost a\n    ProxyJump b\nHost b\n    ProxyJump a\n"
    with pytest.raises(RouteError, match="name each other as ProxyJump"):
        route_hops(tmp_path, config, "login")


def test_a_bad_proxy_jump_names_the_config_file(tmp_path: Path) -> None:
    with pytest.raises(RouteError, match=r"not a number from 1 to 65535.*ssh_config"):
        route_hops(tmp_path, "Host login\n    ProxyJump bastion:ssh\n", "login")
