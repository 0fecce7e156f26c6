"""Image references are parsed as Docker parses them (distribution/reference's ParseNormalizedNamed); the
cases are distribution/reference's own tests (normalize_test.go, reference_test.go)."""

import pytest

from raftswarm.errors import RaftswarmError
from raftswarm.objects.reference import InvalidReference, Reference, parse

DIGEST = "sha256:" + "f" * 64
REDIS_DIGEST = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/library/debian", "docker.io", "library/debian", "latest", None),
        ("index.docker.io/debian", "docker.io", "library/debian", "latest", None),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar", "latest", None),
        ("dmcgowan/myapp", "docker.io", "dmcgowan/myapp", "latest", None),
        ("test_com/foo", "docker.io", "test_com/foo", "latest", None),
        ("test.com/foo", "test.com", "foo", "latest", None),
        ("test-com:8080/foo", "test-com:8080", "foo", "latest", None),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo", "latest", None),
        ("localhost/fooo", "localhost", "fooo", "latest", None),
        ("localhost:5000/app:1", "localhost:5000", "app", "1", None),
        ("LOCALDOMAIN/fooo/bar", "LOCALDOMAIN", "fooo/bar", "latest", None),
        ("Foo/bar", "Foo", "bar", "latest", None),
        ("127.0.0.1:5000/docker/docker", "127.0.0.1:5000", "docker/docker", "latest", None),
        ("192.168.0.1", "docker.io", "library/192.168.0.1", "latest", None),
        ("192.168.0.1:80", "docker.io", "library/192.168.0.1", "80", None),
        ("test.com:5000", "docker.io", "library/test.com", "5000", None),
        ("foo/foo_bar.com:8080", "docker.io", "foo/foo_bar.com", "8080", None),
        ("[fc00::1]:5000/docker", "[fc00::1]:5000", "docker", "latest", None),
        ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", "latest", None),
        ("docker---rules/docker", "docker.io", "docker---rules/docker", "latest", None),
        ("dock__er/docker", "docker.io", "dock__er/docker", "latest", None),
        ("lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", None),
        ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app", "test.example.com", None),
        ("docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
         "docker.io", "library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "latest", None),
        (f"redis@{REDIS_DIGEST}", "docker.io", "library/redis", None, REDIS_DIGEST),
        (f"registry.example.com/a/b@{DIGEST}", "registry.example.com", "a/b", None, DIGEST),
        (f"busybox:latest@{REDIS_DIGEST}", "docker.io", "library/busybox", "latest", REDIS_DIGEST),
        (f"[2001:db8::1]:5000/repo:tag@{DIGEST}", "[2001:db8::1]:5000", "repo", "tag", DIGEST),
        # 255 characters of path: the longest name allowed
        ("a/" * 127 + "a:tag-puts-this-over-max", "docker.io", "a/" * 127 + "a", "tag-puts-this-over-max", None),
    ],
)
def test_parse_normalizes_as_docker(text, domain, path, tag, digest):
    assert parse(text) == Reference(domain, path, tag, digest)


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
        ("myorg/app:1", "docker.io/myorg/app:1", "myorg/app:1"),
        ("library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
        ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000/app:1"),
        ("example.com:8000/private/moonbase", "example.com:8000/private/moonbase:latest", "example.com:8000/private/moonbase:latest"),
        (f"redis@{REDIS_DIGEST}", f"docker.io/library/redis@{REDIS_DIGEST}", f"redis@{REDIS_DIGEST}"),
        (f"busybox:latest@{REDIS_DIGEST}", f"docker.io/library/busybox:latest@{REDIS_DIGEST}", f"busybox:latest@{REDIS_DIGEST}"),
    ],
)
def test_full_and_familiar_strings(text, full, familiar):
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert parse(full) == ref  # the full string parses back to the same reference


def test_name_is_domain_and_path():
    assert parse("busybox").name == "docker.io/library/busybox"
    assert parse("localhost:5000/app:1").name == "localhost:5000/app"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://github.com/docker/docker",
        "-docker",
        "-docker/docker",
        "-docker.io/docker/docker",
        "docker///docker",
        "docker.io/docker///docker",
        "docker-/docker",
        "-docker-/docker",
        "____/____",
        "_docker/_docker",
        "dock..er/docker",
        "dock_.er/docker",
        "dock-.er/docker",
        "docker/",
        ":justtag",
        f"@{DIGEST}",
        "aa/asdf$$^/aa",
        "[fc00::1]",
        "[fc00::1]:5000",
        "fc00::1:5000/debian",
        "[fe80::1%eth0]:5000/debian",
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
    ],
)
def test_invalid_references_refused(text):
    with pytest.raises(InvalidReference):
        parse(text)


def test_invalid_reference_message_is_dockers():
    with pytest.raises(InvalidReference, match=r"^invalid reference format$"):
        parse("aa/asdf$$^/aa")


def test_invalid_reference_is_a_raftswarm_error_and_a_value_error():
    with pytest.raises(RaftswarmError):
        parse("-docker")
    with pytest.raises(ValueError):
        parse("-docker")


@pytest.mark.parametrize("text", ["docker/Docker", "docker.io/docker/Docker", "Uppercase:tag", "test:5000/Uppercase/lowercase:tag"])
def test_uppercase_in_the_path_refused_with_dockers_words(text):
    with pytest.raises(InvalidReference, match=r"^invalid reference format: repository name .*must be lowercase"):
        parse(text)


def test_sixty_four_hex_digits_are_an_id_not_a_name():
    with pytest.raises(InvalidReference, match="cannot specify 64-byte hexadecimal strings"):
        parse("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a")


def test_name_longer_than_255_refused():
    with pytest.raises(InvalidReference, match="must not be more than 255 characters"):
        parse("domain.com/" + "a" * 256 + ":tag")
    assert parse("example.com/" + "a" * 255 + ":tag").path == "a" * 255


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
        ("validname@invaliddigest:" + "f" * 64, "unsupported digest algorithm"),
        ("repo@sha256:" + "F" * 64, "invalid checksum digest format"),
    ],
)
def test_digests_checked_as_go_digest_does(text, message):
    with pytest.raises(InvalidReference, match=message):
        parse(text)


def test_tag_at_most_128_characters():
    assert parse("busybox:" + "a" * 128).tag == "a" * 128
    with pytest.raises(InvalidReference):
        parse("busybox:" + "a" * 129)
