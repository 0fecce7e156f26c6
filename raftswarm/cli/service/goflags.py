"""Flag values read the way docker's Go flag library (spf13/pflag) and Go's strconv read them, so that a
`service create`/`update` flag takes exactly the text docker's takes: booleans that also take `--tty=false`,
integers in Go's bases (`0x10`, `0o17`, `017`, `1_000`), and command lines split by google/shlex (docker's
ShlexOpt, for `--entrypoint`).

A bad value is a usage error (`ParsedFlag`), with Go's words for it (`strconv.ParseUint: parsing "x": invalid
syntax`), as docker's `invalid argument "x" for "--replicas" flag: ...` has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..options import ParsedFlag

# -- booleans ---------------------------------------------------------------------------------------------

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool: the spellings pflag takes after `--flag=`."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


GO_BOOL = ParsedFlag("bool", parse_go_bool)


class GoBoolOption(click.Option):
    """A boolean flag whose absence differs from `false`, as with pflag's `flags.Changed`: `--tty` is True,
    `--tty=false` is False (it turns off what a service has, on `update`), and a flag left out is None.
    `PflagCommand` writes a bare `--tty` as `--tty=true` before click parses it, so click always sees a value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, type=GO_BOOL, default=None, metavar="", **kwargs)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        return None if record is None else (record[0].rstrip(), record[1])  # no value shown, as for a flag


class PflagCommand(click.Command):
    """A command whose boolean flags take a value after `=` as pflag's do: `--detach=false` is the flag left
    out, `--tty=false` (a `GoBoolOption`) is the flag given as false. Only the command's options are
    rewritten: the words after the first argument of a command that stops there (`create IMAGE COMMAND...`)
    and after `--` are the container's, and stay as they are."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._pflag_booleans(ctx, args))

    def _pflag_booleans(self, ctx: click.Context, args: Sequence[str]) -> list[str]:
        options = {name: p for p in self.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}
        rewritten: list[str] = []
        position = 0
        while position < len(args):
            arg = args[position]
            position += 1
            if arg == "--" or not arg.startswith("-") or arg == "-":
                if arg == "--" or not ctx.allow_interspersed_args:
                    return rewritten + list(args[position - 1 :])
                rewritten.append(arg)
                continue
            words, takes_next = _long_option(arg, options) if arg.startswith("--") else _short_options(arg, options)
            rewritten += words
            if takes_next and position < len(args):
                rewritten.append(args[position])
                position += 1
        return rewritten


def _long_option(arg: str, options: dict[str, click.Option]) -> tuple[list[str], bool]:
    """`--name[=value]` as click should see it, and whether the next word is its value."""
    name, sep, value = arg.partition("=")
    option = options.get(name)
    if option is None or not (option.is_flag or isinstance(option, GoBoolOption)):
        return [arg], option is not None and not sep
    return _boolean(name, option, value if sep else None), False


def _short_options(arg: str, options: dict[str, click.Option]) -> tuple[list[str], bool]:
    """`-dt`, `-t=false`, `-efoo`, `-e`: each short flag on its own, a GoBoolOption's with its value."""
    words: list[str] = []
    for index, letter in enumerate(arg[1:], start=1):
        option = options.get(f"-{letter}")
        rest = arg[index + 1 :]
        if option is None:
            return [arg], False  # click reports the unknown option
        if not (option.is_flag or isinstance(option, GoBoolOption)):
            return [*words, f"-{letter}{rest}"], not rest
        if rest.startswith("="):
            return [*words, *_boolean(f"-{letter}", option, rest[1:])], False
        words += _boolean(f"-{letter}", option, None)
    return words, False


def _boolean(name: str, option: click.Option, value: str | None) -> list[str]:
    """A boolean flag given as `name` or `name=value`, as click should see it."""
    try:
        if isinstance(option, GoBoolOption):
            value = "true" if value is None else value
            if name.startswith("--"):
                return [f"{name}={value}"]
            parse_go_bool(value)  # an empty value attached to a short flag would make click take the next word
            return [f"{name}{value}"]
        return [name] if value is None or parse_go_bool(value) else []
    except ValueError as exc:
        raise click.UsageError(f'invalid argument "{value}" for "{name}" flag: {exc}') from None


# -- integers ---------------------------------------------------------------------------------------------


def _underscores_ok(text: str) -> bool:
    """Go's strconv.underscoreOK: `_` only between digits (or after a base prefix)."""
    saw = "^"
    body = text[1:] if text[:1] in ("+", "-") else text
    hexadecimal = False
    index = 0
    if len(body) >= 2 and body[0] == "0" and body[1].lower() in "box":
        index, saw, hexadecimal = 2, "0", body[1].lower() == "x"
    for char in body[index:]:
        if char.isascii() and (char.isdigit() or hexadecimal and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def _go_integer(text: str, *, signed: bool, base: int) -> int:
    """Go's strconv.ParseInt / ParseUint (64 bits) in `base` 10, or 0 (the base from the prefix, `_` allowed
    between digits)."""
    function = "ParseInt" if signed else "ParseUint"

    def error(reason: str) -> ValueError:
        return ValueError(f'strconv.{function}: parsing "{text}": {reason}')

    body, negative = text, False
    if signed and body[:1] in ("+", "-"):
        body, negative = body[1:], body[0] == "-"
    if not body:
        raise error("invalid syntax")
    if base == 0:
        base = 10
        if body[0] == "0":
            if len(body) >= 3 and body[1].lower() in "box":
                base, body = {"b": 2, "o": 8, "x": 16}[body[1].lower()], body[2:]
            else:
                base, body = 8, body[1:]
        if "_" in body and not _underscores_ok(text):
            raise error("invalid syntax")
        body = body.replace("_", "")
    if any(not (char.isascii() and char.isalnum()) or int(char, 36) >= base for char in body):
        raise error("invalid syntax")
    value = int(body, base) if body else 0
    limit = 2**63 if signed else 2**64  # magnitudes up to (not including) this, and -2**63
    if value >= limit and not (negative and value == limit):
        raise error("value out of range")
    return -value if negative else value


def parse_go_int(text: str, base: int = 0) -> int:
    """pflag's int and int64 flags: Go's strconv.ParseInt(text, base, 64), base 0 by default."""
    return _go_integer(text, signed=True, base=base)


def parse_go_uint(text: str) -> int:
    """pflag's uint64 flags and docker's Uint64Opt: Go's strconv.ParseUint(text, 0, 64)."""
    return _go_integer(text, signed=False, base=0)


GO_INT = ParsedFlag("int", parse_go_int)
GO_UINT = ParsedFlag("uint", parse_go_uint)


# -- command lines ----------------------------------------------------------------------------------------


def split_command(text: str) -> list[str]:
    """google/shlex's Split, as docker's ShlexOpt splits `--entrypoint`: words separated by spaces, tabs and
    newlines; `'...'` taken as it is; `"..."` and a bare `\\` escaping the next character; a `#` that starts a
    word comments out the rest of its line."""
    words: list[str] = []
    word: list[str] = []
    state = "between"  # between words, in a word, in quotes, after an escape, in a comment
    for char in text:
        if state == "comment":
            state = "between" if char == "\n" else state
        elif state in ("escape", "quoted escape"):
            word.append(char)
            state = "word" if state == "escape" else "double quotes"
        elif state == "single quotes":
            if char == "'":
                state = "word"
            else:
                word.append(char)
        elif state == "double quotes":
            if char == '"':
                state = "word"
            elif char == "\\":
                state = "quoted escape"
            else:
                word.append(char)
        elif char in _SPACES:
            if state == "word":
                words.append("".join(word))
                word = []
            state = "between"
        elif char == "#" and state == "between":
            state = "comment"
        elif char in _QUOTE_STATES:
            state = _QUOTE_STATES[char]
        else:
            word.append(char)
            state = "word"
    if state in ("escape", "quoted escape"):
        raise ValueError("EOF found after escape character")
    if state in ("single quotes", "double quotes"):
        raise ValueError("EOF found when expecting closing quote")
    if state == "word":
        words.append("".join(word))
    return words


_SPACES = " \t\r\n"
_QUOTE_STATES = {"'": "single quotes", '"': "double quotes", "\\": "escape"}


COMMAND = ParsedFlag("command", split_command)
"""A command line flag (`--entrypoint "sh -c 'echo hi'"`); the value is its words."""
