"""The API server's connection caps: in all, kept under the open-file limit; per client
address."""

from __future__ import annotations

from swarm_engine.api.protocol import FD_RESERVE, PerAddress, address_key, connection_cap


def test_the_cap_leaves_descriptors_for_the_server_s_own_files() -> None:
    assert connection_cap(1024, 20_000) == 1024
    assert connection_cap(50_000, 20_000) == 20_000 - FD_RESERVE
    assert connection_cap(1024, 1024) == 1024 - FD_RESERVE
    assert connection_cap(1024, 256) == 128  # a low limit: half of it
    assert connection_cap(1024, -1) == 1024  # no limit (RLIM_INFINITY)
    assert connection_cap(1024, 1) == 1


def test_connections_are_counted_by_address_an_ipv6_one_by_its_64() -> None:
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"  # (a dual-stack socket)
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("not an address") == "not an address"


def test_the_per_address_count_holds_only_open_connections() -> None:
    per = PerAddress(2)
    assert per.take("a") and per.take("a") and not per.take("a")
    assert per.take("b")
    per.give_back("a")
    assert per.take("a") and not per.take("a")
    for key in ("a", "a", "b"):
        per.give_back(key)
    assert per.open == {}  # an address with none open leaves no entry
