"""ProxyJump values are read as OpenSSH reads them."""

import pytest

from slurmbatch.transport._proxy_jump import JumpHop, ProxyJumpError, parse_proxy_jump


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        ("bastion", (JumpHop("bastion"),)),
        ("me@bastion", (JumpHop("bastion", user="me"),)),
        ("bastion:2222", (JumpHop("bastion", port=2222),)),
        ("me@127.0.0.1:2222", (JumpHop("127.0.0.1", user="me", port=2222),)),
        ("ssh://me@bastion:2222", (JumpHop("bastion", user="me", port=2222),)),
        ("ssh://bastion/", (JumpHop("bastion"),)),
        ("[::1]:2222", (JumpHop("::1", port=2222),)),
        ("::1", (JumpHop("::1"),)),
        ("first,me@second:23", (JumpHop("first"), JumpHop("second", user="me", port=23))),
        ("a, b", (JumpHop("a"), JumpHop("b"))),
        ("me@site@bastion", (JumpHop("bastion", user="me@site"),)),
        ("none", ()),
        ("NONE", ()),
        ("", ()),
    ],
)
def test_hops_are_read_in_order(value: str, hops: tuple[JumpHop, ...]) -> None:
    assert parse_proxy_jump(value) == hops


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a,,b", "empty hop"),
        ("a,", "empty hop"),
        ("bastion:ssh", "'ssh'"),
        ("bastion:0", "from 1 to 65535"),
        ("bastion:70000", "from 1 to 65535"),
        ("@bastion", "user"),
        ("me@", "does not name a host"),
        ("[::1]x", "'x'"),
    ],
)
def test_bad_values_name_the_bad_part(value: str, words: str) -> None:
    with pytest.raises(ProxyJumpError) as raised:
        parse_proxy_jump(value)
    assert words in str(raised.value)
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize("written", ["bastion", "me@bastion:22", "[::1]:2222", "me@::1"])
def test_a_hop_prints_as_written(written: str) -> None:
    (hop,) = parse_proxy_jump(written)
    assert str(hop) == written
