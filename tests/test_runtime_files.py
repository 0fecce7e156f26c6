"""What the task runtime reads and writes around a container, without running one: the image files read
without leaving its root (`runtime.files`), the generated /etc/hosts and resolv.conf (with the spec's extra
hosts and DNSConfig), conmon's k8s-file log
read back as lines (`runtime.logs`: partial lines, nanosecond timestamps, tail and since, following across
conmon's replacement of the file), and which secret references become which files (`runtime.secrets`).
"""

from __future__ import annotations

import asyncio
import datetime
import os
from pathlib import Path

import pytest

from raftswarm.runtime import logs
from raftswarm.runtime.files import TASK_RESOLVER, configured_nameservers, hosts_file, read_in_rootfs, resolv_conf
from raftswarm.objects.containerspec import parse_extra_hosts
from raftswarm.runtime.logs import LogParser, follow_lines, parse_time, read_lines
from raftswarm.runtime.secrets import MAX_SECRET_FILES, InvalidSecretTarget, SecretFile, secret_files, target_path
from raftswarm.objects.containerspec import InvalidContainerSpec

# -- reading the image's files ---------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path) -> Path:
    """A task's root filesystem with /etc/passwd, next to a host file it must not reach."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "host-shadow").write_text("root:host-hash:::\n")
    return root


def test_read_in_rootfs_reads_a_file_of_the_image(rootfs):
    assert read_in_rootfs(rootfs, "etc/passwd") == "root:x:0:0::/root:/bin/sh\n"
    assert read_in_rootfs(rootfs, "/etc/passwd") == read_in_rootfs(rootfs, "etc/./passwd")  # always inside


def test_read_in_rootfs_gives_none_for_a_missing_file(rootfs):
    assert read_in_rootfs(rootfs, "etc/group") is None
    assert read_in_rootfs(rootfs, "no/such/dir/group") is None
    assert read_in_rootfs(rootfs, "etc/passwd/group") is None  # a file where a directory should be


@pytest.mark.security
@pytest.mark.parametrize(
    "link, target",
    [
        ("etc/group", "{host}/host-shadow"),  # an absolute link to a host file
        ("etc/group", "../../host-shadow"),  # a relative one climbing out of the root
        ("etc/group", "/etc/passwd"),  # even one that would stay inside if it were resolved in the root
    ],
)
def test_read_in_rootfs_never_follows_a_symlinked_file(rootfs, link, target):
    os.symlink(target.format(host=rootfs.parent), rootfs / link)
    assert read_in_rootfs(rootfs, link) is None


@pytest.mark.security
def test_read_in_rootfs_never_follows_a_symlinked_directory(rootfs, tmp_path):
    (tmp_path / "host-etc").mkdir()
    (tmp_path / "host-etc" / "passwd").write_text("host's own\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc").rmdir()
    os.symlink(tmp_path / "host-etc", rootfs / "etc")
    assert read_in_rootfs(rootfs, "etc/passwd") is None


def test_read_in_rootfs_gives_none_for_a_fifo_without_blocking(rootfs):
    os.mkfifo(rootfs / "etc" / "group")
    assert read_in_rootfs(rootfs, "etc/group") is None


def test_read_in_rootfs_gives_none_for_a_directory(rootfs):
    (rootfs / "etc" / "group").mkdir()
    assert read_in_rootfs(rootfs, "etc/group") is None


def test_read_in_rootfs_reads_at_most_the_limit(rootfs):
    (rootfs / "etc" / "group").write_text("x" * 1000)
    assert read_in_rootfs(rootfs, "etc/group", limit=10) == "x" * 10


@pytest.mark.parametrize("relative", ["", "/", ".", "../etc/passwd", "etc/../../passwd"])
def test_read_in_rootfs_refuses_a_path_that_is_not_inside(rootfs, relative):
    with pytest.raises(ValueError, match="not a relative path inside the root filesystem"):
        read_in_rootfs(rootfs, relative)


# -- the generated /etc files ----------------------------------------------------------------------------


def test_hosts_file_has_dockers_loopback_names_then_each_address_with_the_hostname():
    lines = hosts_file("web-1", ["10.0.1.5", "10.0.9.3"]).splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert lines[-2:] == ["10.0.1.5\tweb-1", "10.0.9.3\tweb-1"]
    assert "web-1" not in hosts_file("web-1", [])


def test_extra_hosts_come_after_the_loopback_names_and_before_the_tasks_own_addresses():
    extra = ["192.0.2.10 db", "192.0.2.11  cache  cache.internal\tredis"]
    lines = hosts_file("web-1", ["10.0.1.5"], extra).splitlines()
    assert lines[-3:] == ["192.0.2.10\tdb", "192.0.2.11\tcache cache.internal redis", "10.0.1.5\tweb-1"]
    assert lines[0] == "127.0.0.1\tlocalhost"


def test_an_extra_hosts_ipv6_address_is_written_in_its_canonical_form():
    assert hosts_file("web-1", [], ["2001:DB8:0::1 v6host"]).splitlines()[-1] == "2001:db8::1\tv6host"


def test_a_hostname_with_a_dot_is_listed_with_its_first_label_too():
    assert hosts_file("web.example.com", ["10.0.1.5"]).splitlines()[-1] == "10.0.1.5\tweb.example.com web"


@pytest.mark.parametrize(
    "entry, message",
    [
        ("192.0.2.10", "is not \"IP_ADDRESS HOSTNAME \\[ALIAS...\\]\""),  # no name
        ("", "is not \"IP_ADDRESS HOSTNAME"),
        ("db:192.0.2.10", "--host name:ip"),  # the CLI's form, which the CLI converts
        ("db 192.0.2.10", "db is not an IP address"),  # the two fields swapped
        ("host-gateway db", "host-gateway is not supported here"),
        ("192.0.2.300 db", "192.0.2.300 is not an IP address"),
    ],
)
def test_an_extra_host_not_in_hosts_format_is_refused(entry, message):
    with pytest.raises(InvalidContainerSpec, match=message):
        parse_extra_hosts(["192.0.2.1 fine", entry])


HOST_RESOLV = """# from the node's DHCP
nameserver 127.0.0.53
nameserver ::1
nameserver 192.0.2.53
search corp.example
options ndots:2 timeout:1
"""


def test_resolv_conf_on_networks_names_the_tasks_resolver_with_the_hosts_search_and_options(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text(HOST_RESOLV)
    assert resolv_conf(True, str(host)) == (
        f"nameserver {TASK_RESOLVER}\nsearch corp.example\noptions ndots:2 timeout:1 ndots:0\n"
    )


def test_resolv_conf_on_no_network_is_the_hosts_without_loopback_servers(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text(HOST_RESOLV)
    assert resolv_conf(False, str(host)) == (
        "# from the node's DHCP\nnameserver 192.0.2.53\nsearch corp.example\noptions ndots:2 timeout:1\n"
    )


def test_resolv_conf_without_a_host_file(tmp_path):
    assert resolv_conf(True, str(tmp_path / "missing")) == f"nameserver {TASK_RESOLVER}\noptions ndots:0\n"
    assert resolv_conf(False, str(tmp_path / "missing")) == ""


@pytest.mark.parametrize(
    "on_networks, dns, expected",
    [
        # On networks the file names only the task's resolver; the servers are its upstreams.
        (True, {"Nameservers": ["192.0.2.1"]},
         ["nameserver 127.0.0.11", "search corp.example", "options ndots:2 timeout:1 ndots:0"]),
        (True, {"Search": ["a.example", "b.example"]}, ["nameserver 127.0.0.11", "search a.example b.example",
                                                        "options ndots:2 timeout:1 ndots:0"]),
        (True, {"Options": ["ndots:5", "edns0"]},
         ["nameserver 127.0.0.11", "search corp.example", "options ndots:5 edns0 ndots:0"]),
        (True, {"Search": ["."]}, ["nameserver 127.0.0.11", "options ndots:2 timeout:1 ndots:0"]),  # "." means none
        # On no network: each given setting replaces the host's.
        (False, {"Nameservers": ["192.0.2.1", "2001:db8::53"]},
         ["nameserver 192.0.2.1", "nameserver 2001:db8::53", "search corp.example", "options ndots:2 timeout:1"]),
        (False, {"Search": ["a.example"]}, ["nameserver 192.0.2.53", "search a.example", "options ndots:2 timeout:1"]),
        (False, {"Nameservers": ["192.0.2.1"], "Search": ["a.example"], "Options": ["rotate"]},
         ["nameserver 192.0.2.1", "search a.example", "options rotate"]),
        (False, {"Nameservers": [], "Search": [], "Options": []},  # all empty: the host's file as before
         ["# from the node's DHCP", "nameserver 192.0.2.53", "search corp.example", "options ndots:2 timeout:1"]),
    ],
)
def test_resolv_conf_with_dns_config_is_written_as_dockerd_writes_it_for_dns_flags(
    tmp_path, on_networks, dns, expected
):
    host = tmp_path / "resolv.conf"
    host.write_text(HOST_RESOLV)
    assert resolv_conf(on_networks, str(host), dns=dns).splitlines() == expected


def test_the_configured_nameservers_are_the_resolvers_upstreams():
    servers = {"DNSConfig": {"Nameservers": ["192.0.2.1", " 10.0.0.2"]}}
    assert configured_nameservers(servers) == ["192.0.2.1", "10.0.0.2"]
    assert configured_nameservers({"DNSConfig": {"Search": ["a.example"]}}) == []
    assert configured_nameservers({}) == []


@pytest.mark.parametrize(
    "dns, message",
    [
        ({"Nameservers": ["dns.example"]}, "nameserver 'dns.example' is not an IP address"),
        ({"Nameservers": ["192.0.2.1:53"]}, "is not an IP address"),
        ({"Search": ["a.example b.example"]}, "search domain 'a.example b.example' must be one word"),
        ({"Search": [""]}, "must be one word"),
        ({"Options": ["ndots:1\nnameserver 6.6.6.6"]}, "option .* must be one word"),
    ],
)
def test_a_dns_config_resolv_conf_cannot_hold_is_refused(tmp_path, dns, message):
    with pytest.raises(InvalidContainerSpec, match=message):
        resolv_conf(True, str(tmp_path / "missing"), dns=dns)


# -- conmon's log file -----------------------------------------------------------------------------------

T0 = "2026-12-07T06:04:19.500069112+00:00"
T0_UNIX = datetime.datetime(2026, 12, 7, 6, 4, 19, tzinfo=datetime.timezone.utc).timestamp() + 0.500069112


def record(stream: str, tag: str, content: str, second: int = 19, nanos: int = 500069112) -> bytes:
    """One line of conmon's k8s-file format."""
    return f"2026-12-07T06:04:{second:02d}.{nanos:09d}+00:00 {stream} {tag} {content}\n".encode()


def at(second: int, nanos: int = 500069112) -> float:
    return parse_time(f"2026-12-07T06:04:{second:02d}.{nanos:09d}+00:00".encode())


def test_parse_time_keeps_conmons_nanoseconds_to_the_microsecond():
    assert parse_time(T0.encode()) == pytest.approx(T0_UNIX, abs=1e-6)
    assert at(19, 1000) - at(19, 0) == pytest.approx(1e-6, abs=3e-7)  # as finely as a float holds it
    assert parse_time(b"2026-12-07T06:04:19.5Z") == pytest.approx(T0_UNIX - 0.000069112, abs=1e-6)


def test_parse_time_honours_the_offset_conmon_writes_in_local_time():
    assert parse_time(b"2026-12-07T07:04:19.500069112+01:00") == pytest.approx(T0_UNIX, abs=1e-6)
    assert parse_time(b"2026-12-07T01:04:19.500069112-05:00") == pytest.approx(T0_UNIX, abs=1e-6)
    assert parse_time(b"2026-12-07T06:04:19+00:00") == pytest.approx(T0_UNIX - 0.500069112, abs=1e-6)


@pytest.mark.parametrize("text", [b"", b"yesterday", b"2026-13-07T06:04:19.5Z", b"\xff\xfe", b"2026-12-07T06:04:19.x"])
def test_parse_time_gives_none_for_what_is_not_a_timestamp(text):
    assert parse_time(text) is None


def test_parser_gives_each_full_line_with_its_stream_and_time():
    data = record("stdout", "F", "hello world  with spaces") + record("stderr", "F", "oops", second=20)
    assert LogParser().feed(data) == [
        ("stdout", pytest.approx(T0_UNIX), b"hello world  with spaces"),
        ("stderr", pytest.approx(at(20)), b"oops"),
    ]


def test_parser_joins_partial_pieces_into_one_line_stamped_with_its_first_piece():
    data = (
        record("stdout", "P", "first ", second=19)
        + record("stderr", "F", "interleaved", second=20)
        + record("stdout", "P", "second ", second=21)
        + record("stdout", "F", "last", second=22)
    )
    assert LogParser().feed(data) == [
        ("stderr", pytest.approx(at(20)), b"interleaved"),
        ("stdout", pytest.approx(at(19)), b"first second last"),
    ]


def test_parser_takes_the_file_in_any_chunks():
    data = record("stdout", "P", "a b") + record("stdout", "F", "c") + record("stderr", "F", "") + b"2026-12-07T06"
    whole = LogParser().feed(data)
    parser = LogParser()
    bytewise = [line for i in range(len(data)) for line in parser.feed(data[i:i + 1])]
    assert bytewise == whole == [("stdout", pytest.approx(T0_UNIX), b"a bc"), ("stderr", pytest.approx(T0_UNIX), b"")]


def test_parser_gives_an_empty_line_for_an_empty_record():
    assert [line for _, _, line in LogParser().feed(b"2026-12-07T06:04:19.5Z stdout F\n")] == [b""]


def test_parser_skips_malformed_records():
    data = (
        b"garbage\n"
        + b"not-a-time stdout F x\n"
        + b"2026-12-07T06:04:19.5Z stdin F x\n"
        + b"2026-12-07T06:04:19.5Z stdout\n"
        + record("stdout", "F", "kept")
    )
    assert [line for _, _, line in LogParser().feed(data)] == [b"kept"]


def test_parser_gives_a_very_long_partial_line_in_pieces_instead_of_holding_it(monkeypatch):
    monkeypatch.setattr(logs, "MAX_PARTIAL", 8)
    parser = LogParser()
    assert parser.feed(record("stdout", "P", "abcde")) == []
    assert [line for _, _, line in parser.feed(record("stdout", "P", "fghij"))] == [b"abcdefghij"]
    assert [line for _, _, line in parser.feed(record("stdout", "F", "end"))] == [b"end"]


def test_read_lines_gives_the_last_piece_of_output_that_never_got_its_newline(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(record("stdout", "F", "first") + record("stdout", "P", "error: no config"))
    assert [line for _, _, line in read_lines(path)] == [b"first", b"error: no config"]


@pytest.fixture
def log_file(tmp_path) -> Path:
    """Five stdout lines one second apart (19 .. 23) and a stderr one between them, over many read chunks."""
    path = tmp_path / "log"
    padding = "x" * 30_000  # the file is read in 64 KiB chunks: records straddle them
    data = b"".join(record("stdout", "F", f"{n} {padding}", second=19 + n) for n in range(3))
    data += record("stderr", "F", "warning", second=21)
    data += b"".join(record("stdout", "F", f"{n} {padding}", second=19 + n) for n in range(3, 5))
    path.write_bytes(data)
    return path


ALL = ["0", "1", "2", "warning", "3", "4"]
"""The first word of each line of `log_file`, in order."""


def names(lines: list[logs.LogLine]) -> list[str]:
    return [line.decode().split()[0] for _, _, line in lines]


def test_read_lines_gives_every_line_oldest_first(log_file):
    assert names(read_lines(log_file)) == ALL


def test_read_lines_of_a_missing_file_is_empty(tmp_path):
    assert read_lines(tmp_path / "missing") == []


@pytest.mark.parametrize("tail, expected", [(2, ["3", "4"]), (0, []), (100, ALL), (-1, ALL), (None, ALL)])
def test_read_lines_tail_gives_the_last_lines(log_file, tail, expected):
    assert names(read_lines(log_file, tail=tail)) == expected


def test_read_lines_since_gives_the_lines_from_that_time_on(log_file):
    assert names(read_lines(log_file, since=at(21))) == ["2", "warning", "3", "4"]  # from that time, inclusive
    assert names(read_lines(log_file, since=at(21) + 1e-3)) == ["3", "4"]
    assert names(read_lines(log_file, since=at(21), tail=2)) == ["3", "4"]  # the last of those
    assert read_lines(log_file, since=at(59)) == []


class Follower:
    """Drives `follow_lines` on a file a test writes as conmon would."""

    def __init__(self, path: Path, **options) -> None:
        self.path = path
        self.ended = False
        self.batches = follow_lines(path, lambda: self.ended, **options)

    async def next(self) -> list[str]:
        async with asyncio.timeout(10):
            return names(await anext(self.batches))

    async def rest(self) -> list[str]:
        async with asyncio.timeout(10):
            return [name for batch in [batch async for batch in self.batches] for name in names(batch)]

    def append(self, *records: bytes) -> None:
        with open(self.path, "ab") as file:
            file.write(b"".join(records))

    def replace(self, *records: bytes) -> None:
        """What conmon does past --log-size-max: write log.tmp and rename it over the log."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(b"".join(records))
        os.rename(temporary, self.path)


async def test_follow_gives_the_files_lines_then_new_ones_until_the_task_ends(tmp_path):
    follower = Follower(tmp_path / "log")
    follower.append(record("stdout", "F", "a"))
    assert await follower.next() == ["a"]
    follower.append(record("stdout", "F", "b"), record("stderr", "F", "c"))
    assert await follower.next() == ["b", "c"]
    follower.append(record("stdout", "F", "last"))
    follower.ended = True  # conmon exits after writing everything: what it wrote is still given
    assert await follower.rest() == ["last"]


async def test_follow_with_tail_gives_the_last_lines_then_every_new_one(log_file):
    follower = Follower(log_file, tail=2)
    assert await follower.next() == ["3", "4"]
    follower.append(record("stdout", "F", "5"), record("stdout", "F", "6"), record("stdout", "F", "7"))
    follower.ended = True
    assert await follower.rest() == ["5", "6", "7"]


async def test_follow_with_since_skips_older_lines(log_file):
    follower = Follower(log_file, since=at(22))
    assert await follower.next() == ["3", "4"]
    follower.append(record("stdout", "F", "old", second=0), record("stdout", "F", "new", second=30))
    follower.ended = True
    assert await follower.rest() == ["new"]


async def test_follow_waits_for_the_file_and_ends_if_the_task_ends_without_one(tmp_path):
    follower = Follower(tmp_path / "log")
    waiting = asyncio.ensure_future(follower.next())
    await asyncio.sleep(3 * logs.FOLLOW_INTERVAL)
    assert not waiting.done()
    follower.append(record("stdout", "F", "late"))
    assert await waiting == ["late"]

    never = Follower(tmp_path / "never")
    never.ended = True
    assert await never.rest() == []


async def test_follow_continues_in_the_file_conmon_starts_in_place_of_a_full_one(tmp_path):
    follower = Follower(tmp_path / "log")
    follower.append(record("stdout", "F", "in-first-file"))
    assert await follower.next() == ["in-first-file"]
    waiting = asyncio.ensure_future(follower.next())
    await asyncio.sleep(0)  # the follower found nothing new and waits
    follower.replace(record("stdout", "F", "in-second-file"))
    assert await waiting == ["in-second-file"]
    follower.append(record("stdout", "F", "more"))
    follower.ended = True
    assert await follower.rest() == ["more"]


async def test_follow_loses_no_line_written_to_the_old_file_just_before_conmon_replaced_it(tmp_path):
    follower = Follower(tmp_path / "log")
    follower.append(record("stdout", "F", "a"))
    assert await follower.next() == ["a"]  # the reader holds this batch while conmon goes on:
    follower.append(record("stdout", "F", "late-in-old-file"))
    follower.replace(record("stdout", "F", "in-new-file"))
    follower.ended = True
    assert await follower.rest() == ["late-in-old-file", "in-new-file"]


async def test_follow_gives_the_lines_conmon_wrote_to_a_new_file_just_before_the_task_ended(tmp_path):
    follower = Follower(tmp_path / "log")
    follower.append(record("stdout", "F", "a"))
    assert await follower.next() == ["a"]
    waiting = asyncio.ensure_future(follower.rest())
    await asyncio.sleep(0)  # the follower found nothing new and waits
    follower.replace(record("stdout", "F", "last-words"))
    follower.ended = True
    assert await waiting == ["last-words"]


# -- secrets as files ------------------------------------------------------------------------------------


def ref(secret_id: str, name: str | None = None, **file) -> dict:
    reference = {"SecretID": secret_id, "SecretName": f"name-of-{secret_id}"}
    if name is not None:
        reference["File"] = {"Name": name, **file}
    return reference


def test_each_secret_reference_becomes_a_file_with_its_owner_mode_and_data():
    files = secret_files(
        {"Secrets": [
            ref("s1", "db", UID="0", GID="0", Mode=0o400),
            ref("s2", "app/key", UID="1000", GID="50", Mode=0o440),
        ]},
        {"s1": b"pw", "s2": b"key", "unreferenced": b"x"},
    )
    assert files == [SecretFile("db", 0, 0, 0o400, b"pw"), SecretFile("app/key", 1000, 50, 0o440, b"key")]


def test_a_secret_file_defaults_to_root_and_mode_0444_and_keeps_only_permission_bits():
    (default,) = secret_files({"Secrets": [ref("s1", "db")]}, {"s1": b"pw"})
    assert (default.uid, default.gid, default.mode) == (0, 0, 0o444)
    (masked,) = secret_files({"Secrets": [ref("s1", "db", Mode=0o170644)]}, {"s1": b"pw"})
    assert masked.mode == 0o644  # a file type in Mode is not a permission


def test_a_reference_without_a_file_target_is_not_a_file():
    assert secret_files({"Secrets": [ref("s1")]}, {"s1": b"x"}) == []  # a runtime target (credential spec)
    assert secret_files({}, {}) == []


def test_a_file_target_without_a_name_takes_the_secrets_name():
    reference = {"SecretID": "s1", "SecretName": "db-password", "File": {"UID": "0", "GID": "0", "Mode": 0o400}}
    assert [f.path for f in secret_files({"Secrets": [reference]}, {"s1": b"x"})] == ["db-password"]


def test_a_secret_not_delivered_with_the_task_is_refused():
    with pytest.raises(InvalidSecretTarget, match=r"secret name-of-s1 \(s1\) was not delivered to this node"):
        secret_files({"Secrets": [ref("s1", "db")]}, {})


def test_two_secrets_with_the_same_target_are_refused():
    with pytest.raises(InvalidSecretTarget, match="two secrets of the task target the same file /run/secrets/db"):
        secret_files({"Secrets": [ref("s1", "db"), ref("s2", "/run/secrets/./db")]}, {"s1": b"1", "s2": b"2"})


def test_a_secret_target_inside_another_secrets_file_is_refused():
    with pytest.raises(InvalidSecretTarget, match="app"):
        secret_files({"Secrets": [ref("s1", "app"), ref("s2", "app/key")]}, {"s1": b"1", "s2": b"2"})


def test_a_non_numeric_owner_is_refused():
    with pytest.raises(InvalidSecretTarget, match="File.UID and File.GID must be numeric"):
        secret_files({"Secrets": [ref("s1", "db", UID="root")]}, {"s1": b"x"})


def test_more_secret_files_than_the_limit_are_refused():
    count = MAX_SECRET_FILES + 1
    container_spec = {"Secrets": [ref(f"s{n}", f"file{n}") for n in range(count)]}
    with pytest.raises(InvalidSecretTarget, match=f"at most {MAX_SECRET_FILES} secret files"):
        secret_files(container_spec, {f"s{n}": b"x" for n in range(count)})


@pytest.mark.parametrize(
    "name, path",
    [
        ("db", "db"),
        ("app/key", "app/key"),
        ("app//./key", "app/key"),
        ("/run/secrets/db", "db"),  # an absolute target under /run/secrets, as Docker allows
        ("/run/secrets/app/key", "app/key"),
        ("/run/secrets/../secrets/db", "db"),
    ],
)
def test_a_secret_target_is_a_path_under_run_secrets(name, path):
    assert target_path(name) == path


@pytest.mark.parametrize("name", ["/etc/db", "/run/secretsX/db", "/run/secrets/../db", "/run", "/"])
def test_an_absolute_secret_target_outside_run_secrets_is_refused(name):
    with pytest.raises(InvalidSecretTarget, match="is outside /run/secrets: give a relative name"):
        target_path(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../db", "app/../../db", "/run/secrets", "/run/secrets/."])
def test_a_secret_target_that_is_no_file_under_run_secrets_is_refused(name):
    with pytest.raises(InvalidSecretTarget, match="invalid secret target file name"):
        target_path(name)
