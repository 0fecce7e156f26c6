"""`env_file:` read by docker's rules (docker/cli pkg/kvfile, loader resolveEnvironment): relative to the compose
file, KEY=VALUE taken as written, KEY alone from the deploying environment, comments and blank lines skipped,
later files and then `environment:` winning."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from raftswarm.stack import ComposeError, load_stack, stack_specs


def env_of(directory: Path, service: str, environment: dict[str, str] | None = None) -> list[str]:
    path = directory / "docker-compose.yml"
    body = textwrap.indent(textwrap.dedent(service).strip(), "    ")
    path.write_text(f"services:\n  web:\n    image: busybox\n{body}\n")
    specs = stack_specs(load_stack(path, environment or {}), "app")
    return specs.services["web"]["TaskTemplate"]["ContainerSpec"].get("Env", [])


def test_an_env_file_is_read_as_docker_reads_it(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_bytes(
        b"\xef\xbb\xbf# a comment\n"  # a byte-order mark is dropped
        b"\n"
        b"   PLAIN=value\n"  # leading whitespace goes
        b"QUOTED=\"kept as written\"\n"
        b"TRAILING=space \n"  # trailing whitespace stays
        b"EMPTY=\n"
        b"EQUALS=a=b\n"
        b"FROM_SHELL\n"  # the deploying environment's value
        b"NOT_IN_SHELL\n"  # left out: the shell has none
        b"NO_INTERPOLATION=${PLAIN}\n"
        b"CRLF=dos\r\n"
    )
    env = env_of(tmp_path, "env_file: app.env", {"FROM_SHELL": "shell", "EMPTY_IN_SHELL": ""})
    assert env == [
        "CRLF=dos",
        "EMPTY=",
        "EQUALS=a=b",
        "FROM_SHELL=shell",
        "NO_INTERPOLATION=${PLAIN}",
        "PLAIN=value",
        'QUOTED="kept as written"',
        "TRAILING=space ",
    ]


def test_later_env_files_then_environment_win(tmp_path: Path) -> None:
    (tmp_path / "base.env").write_text("A=base\nB=base\nC=base\n")
    (tmp_path / "prod.env").write_text("B=prod\nC=prod\n")
    env = env_of(tmp_path, "env_file: [base.env, prod.env]\nenvironment: {C: service}")
    assert env == ["A=base", "B=prod", "C=service"]


def test_an_empty_value_takes_the_shells_as_docker_does(tmp_path: Path) -> None:
    # docker/cli updateEnvironment: an env_file or environment: value that is empty gives way to the shell's
    (tmp_path / "app.env").write_text("TOKEN=\nOTHER=\n")
    assert env_of(tmp_path, "env_file: app.env", {"TOKEN": "from-shell"}) == ["OTHER=", "TOKEN=from-shell"]


def test_env_files_are_relative_to_the_compose_file_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.env").write_text("WHERE=conf\n")
    monkeypatch.chdir("/")
    assert env_of(tmp_path, "env_file: ./conf/app.env") == ["WHERE=conf"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"=value\n", "services.web.env_file: invalid env file ({file}): no variable name on line '=value'"),
        (b"MY VAR=1\n", "services.web.env_file: invalid env file ({file}): variable 'MY VAR' contains whitespaces"),
        (b"OK=1\nBAD=\xff\n", "services.web.env_file: invalid env file ({file}): invalid utf8 bytes at line 2"),
    ],
)
def test_a_bad_env_file_names_the_key_the_file_and_the_line(tmp_path: Path, content: bytes, words: str) -> None:
    (tmp_path / "app.env").write_bytes(content)
    with pytest.raises(ComposeError) as caught:
        env_of(tmp_path, "env_file: app.env")
    assert words.format(file=tmp_path / "app.env") in str(caught.value)


def test_a_missing_env_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ComposeError) as caught:
        env_of(tmp_path, "env_file: [ok.env, missing.env]")
    assert "services.web.env_file[0]: cannot read" in str(caught.value)
    (tmp_path / "ok.env").write_text("A=1\n")
    with pytest.raises(ComposeError, match=r"services\.web\.env_file\[1\]: cannot read .*missing\.env: No such file"):
        env_of(tmp_path, "env_file: [ok.env, missing.env]")
