"""HOST:PORT as users and nodes write it: one parser, one clear error."""

import pytest

from raftswarm.addresses import InvalidAddress, parse_host_port


@pytest.mark.parametrize(
    "text, default, expected",
    [
        ("10.0.0.1:2377", None, ("10.0.0.1", 2377)),
        ("node-1:7946", None, ("node-1", 7946)),
        ("[::1]:2377", None, ("::1", 2377)),
        ("10.0.0.1", 2377, ("10.0.0.1", 2377)),
        ("::1", 2377, ("::1", 2377)),
    ],
)
def test_addresses_parse(text, default, expected):
    assert parse_host_port(text, default) == expected


@pytest.mark.parametrize("text", ["", "host", ":2377", "host:", "host:http", "host:0", "host:65536", "[::1:2377", "::1"])
def test_bad_addresses_are_refused_with_a_clear_error(text):
    with pytest.raises(InvalidAddress, match="invalid address"):
        parse_host_port(text)
