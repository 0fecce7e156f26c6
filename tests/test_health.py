"""Docker's healthchecks without a container: which check a task runs (the spec merged over the image's, as
dockerd's daemon/commit.go merges them, with daemon/health.go's defaults), what a stream of probe results makes
of a container (starting, healthy, unhealthy, with the start-period rule of handleProbeResult), when the next
probe runs (getInterval), and what one probe records (its output cut at 4 KiB, a timeout a failure)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftswarm.runtime import health
from raftswarm.runtime.health import Health, Healthcheck, HealthStatus, ProbeResult, effective_healthcheck

SECOND = 1_000_000_000

IMAGE = {"Test": ["CMD-SHELL", "curl -f http://localhost/"], "Interval": 10 * SECOND, "Timeout": 2 * SECOND,
         "StartPeriod": 60 * SECOND, "StartInterval": SECOND, "Retries": 5}
"""An image's HEALTHCHECK as its config holds it (Docker's JSON: durations in nanoseconds)."""


# -- the effective check -----------------------------------------------------------------------------------


def test_the_images_check_applies_when_the_spec_has_none():
    assert effective_healthcheck(None, IMAGE) == Healthcheck(
        test=("CMD-SHELL", "curl -f http://localhost/"), interval=10.0, timeout=2.0, start_period=60.0,
        start_interval=1.0, retries=5,
    )


def test_the_specs_fields_win_and_those_it_leaves_zero_or_empty_take_the_images():
    spec = {"Test": [], "Interval": 0, "Timeout": 3 * SECOND, "Retries": 0, "StartPeriod": SECOND // 2}
    assert effective_healthcheck(spec, IMAGE) == Healthcheck(
        test=("CMD-SHELL", "curl -f http://localhost/"), interval=10.0, timeout=3.0, start_period=0.5,
        start_interval=1.0, retries=5,
    )
    own = effective_healthcheck({"Test": ["CMD", "true"]}, IMAGE)
    assert own is not None and own.test == ("CMD", "true") and own.interval == 10.0


def test_what_neither_sets_takes_dockers_defaults():
    assert effective_healthcheck({"Test": ["CMD", "true"]}, None) == Healthcheck(
        test=("CMD", "true"), interval=30.0, timeout=30.0, start_period=0.0, start_interval=5.0, retries=3
    )


@pytest.mark.parametrize(
    ("spec", "image"),
    [
        (None, None),
        ({}, None),
        ({"Test": [], "Interval": SECOND}, None),  # times alone are no check
        ({"Test": ["NONE"]}, IMAGE),  # --no-healthcheck turns the image's off
        (None, {"Test": ["NONE"]}),  # HEALTHCHECK NONE
        ({"Interval": SECOND}, {"Test": ["NONE"]}),
    ],
)
def test_no_test_or_a_none_test_means_no_healthcheck(spec, image):
    assert effective_healthcheck(spec, image) is None


def test_a_spec_test_overrides_an_images_none():
    assert effective_healthcheck({"Test": ["CMD", "true"]}, {"Test": ["NONE"]}) is not None


def test_a_test_of_an_unknown_type_is_no_healthcheck_and_is_logged(caplog):
    with caplog.at_level(logging.WARNING):
        assert effective_healthcheck({"Test": ["curl", "localhost"]}, None) is None
    assert "'curl' is not CMD, CMD-SHELL or NONE" in caplog.text


def test_an_images_malformed_healthcheck_fields_count_as_unset():
    """An image config comes from anywhere; a bad one must not stop the task's agent."""
    assert effective_healthcheck({"Test": ["CMD", "check"]}, "curl localhost") == Healthcheck(("CMD", "check"))
    assert effective_healthcheck(None, {"Test": "curl localhost"}) is None
    odd = {"Test": ["CMD", "true"], "Interval": "30s", "Retries": True, "Timeout": -SECOND, "StartPeriod": None}
    assert effective_healthcheck(None, odd) == Healthcheck(("CMD", "true"))  # Docker's defaults


@pytest.mark.parametrize(
    ("test", "argv"),
    [
        (["CMD", "/bin/check", "--quick"], ["/bin/check", "--quick"]),
        (["CMD-SHELL", "test -f /ready && echo ok"], ["/bin/sh", "-c", "test -f /ready && echo ok"]),
        (["CMD-SHELL", "echo $0", "zero"], ["/bin/sh", "-c", "echo $0", "zero"]),  # dockerd appends them all
        (["CMD"], []),
        (["CMD-SHELL"], []),
    ],
)
def test_cmd_runs_its_arguments_and_cmd_shell_runs_them_with_bin_sh_c(test, argv):
    check = effective_healthcheck({"Test": test}, None)
    assert check is not None and check.argv == argv


# -- the status from the results ---------------------------------------------------------------------------


def result(exit_code: int, start: float, output: str = "") -> ProbeResult:
    return ProbeResult(exit_code, output, start, start + 0.01)


def statuses(health_: Health, codes_at: list[tuple[int, float]]) -> list[str]:
    return [str(health_.record(result(code, at))) for code, at in codes_at]


def test_a_container_is_starting_until_a_probe_succeeds_then_healthy():
    followed = Health(Healthcheck(("CMD", "true"), retries=3), started_at=100.0)
    assert followed.status is HealthStatus.STARTING
    assert statuses(followed, [(1, 130), (1, 160), (0, 190)]) == ["starting", "starting", "healthy"]
    assert followed.failing_streak == 0


def test_retries_consecutive_failures_make_it_unhealthy_and_a_success_in_between_resets_the_count():
    followed = Health(Healthcheck(("CMD", "true"), retries=3), started_at=0.0)
    codes = [0, 1, 1, 0, 1, 1, 1]
    assert statuses(followed, [(code, i) for i, code in enumerate(codes)]) == [
        "healthy", "healthy", "healthy", "healthy", "healthy", "healthy", "unhealthy"
    ]
    assert followed.failing_streak == 3


def test_every_non_zero_code_is_a_failure_and_a_later_success_heals_as_in_dockerd():
    followed = Health(Healthcheck(("CMD", "true"), retries=1), started_at=0.0)
    assert statuses(followed, [(2, 1), (0, 2), (-1, 3), (0, 4)]) == ["unhealthy", "healthy", "unhealthy", "healthy"]


def test_failures_within_the_start_period_do_not_count_while_no_probe_has_succeeded():
    followed = Health(Healthcheck(("CMD", "true"), retries=1, start_period=10.0), started_at=100.0)
    assert statuses(followed, [(1, 101), (1, 105), (1, 109.99)]) == ["starting"] * 3
    assert followed.failing_streak == 0
    # A probe that starts at the end of the period counts (dockerd: time since start < start period is spared).
    assert followed.record(result(1, 110)) is HealthStatus.UNHEALTHY


def test_once_a_probe_succeeded_failures_within_the_start_period_count():
    followed = Health(Healthcheck(("CMD", "true"), retries=2, start_period=60.0), started_at=0.0)
    assert statuses(followed, [(0, 1), (1, 2), (1, 3)]) == ["healthy", "healthy", "unhealthy"]


def test_the_start_period_counts_from_when_a_probe_started_not_ended():
    followed = Health(Healthcheck(("CMD", "true"), retries=1, start_period=10.0), started_at=0.0)
    assert followed.record(ProbeResult(-1, "Health check exceeded timeout (30s)", 9.0, 39.0)) is HealthStatus.STARTING


def test_probes_come_every_start_interval_while_starting_in_the_start_period_else_every_interval():
    check = Healthcheck(("CMD", "true"), interval=30.0, start_period=20.0, start_interval=2.0, retries=3)
    followed = Health(check, started_at=100.0)
    assert followed.next_probe_in(100.0) == 2.0  # the first probe too
    assert followed.next_probe_in(119.9) == 2.0
    assert followed.next_probe_in(120.0) == 30.0  # the period is over
    followed.record(result(0, 105))
    assert followed.next_probe_in(106.0) == 30.0  # healthy: no need to hurry


def test_without_a_start_period_the_first_probe_comes_after_one_interval():
    followed = Health(Healthcheck(("CMD", "true"), interval=30.0), started_at=0.0)
    assert followed.next_probe_in(0.0) == 30.0


# -- one probe, and a watch, against a stand-in for the container -------------------------------------------


class Answers:
    """A container whose exec answers with the given (code, output) pairs in turn, recording each call."""

    def __init__(self, *answers: tuple[int | None, bytes] | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[str], float, int]] = []

    async def exec(self, argv: list[str], timeout: float, *, output_limit: int) -> tuple[int | None, bytes]:
        self.calls.append((argv, timeout, output_limit))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        code, output = answer
        return code, output[:output_limit]


async def test_a_probe_runs_the_tests_argv_with_its_timeout_and_keeps_its_output():
    container = Answers((1, b"connection refused\n"))
    check = Healthcheck(("CMD-SHELL", "curl localhost"), timeout=2.5)
    probed = await health.probe(container, check, clock=iter([10.0, 10.5]).__next__)
    assert probed == ProbeResult(1, "connection refused\n", 10.0, 10.5)
    assert container.calls == [(["/bin/sh", "-c", "curl localhost"], 2.5, health.MAX_OUTPUT + 1)]


async def test_a_probes_output_is_cut_at_4_kib_with_dots_as_dockerd_cuts_it():
    check = Healthcheck(("CMD", "yes"))
    cut = await health.probe(Answers((0, b"y" * 10_000)), check)
    assert cut.output == "y" * 4096 + "..."
    exact = await health.probe(Answers((0, b"y" * 4096)), check)
    assert exact.output == "y" * 4096


async def test_a_probe_that_timed_out_is_a_failure_with_dockerds_words():
    check = Healthcheck(("CMD", "sleep", "9"), timeout=0.5)
    assert (await health.probe(Answers((None, b"")), check)).exit_code == -1
    assert (await health.probe(Answers((None, b"")), check)).output == "Health check exceeded timeout (0.5s)"
    partial = await health.probe(Answers((None, b"half")), check)
    assert partial.output == "Health check exceeded timeout (0.5s): half"


async def test_a_probe_that_cannot_run_is_a_failure_and_one_without_a_command_is_not_run():
    failed = await health.probe(Answers(FileNotFoundError(2, "No such file or directory", "runc")), Healthcheck(("CMD", "x")))
    assert failed.exit_code == -1 and "No such file or directory" in failed.output
    nothing = Answers()
    empty = await health.probe(nothing, Healthcheck(("CMD",)))
    assert (empty.exit_code, empty.output, nothing.calls) == (-1, "healthcheck has no command", [])


async def test_watch_reports_each_change_of_status_and_returns_once_unhealthy():
    container = Answers((1, b""), (0, b"ok"), (0, b"ok"), (1, b"down"), (1, b"down"))
    followed = Health(Healthcheck(("CMD", "check"), interval=0.001, retries=2), started_at=0.0)
    seen: list[HealthStatus] = []
    await asyncio.wait_for(health.watch(container, followed, seen.append), 5)
    assert seen == [HealthStatus.HEALTHY, HealthStatus.UNHEALTHY]
    assert len(container.calls) == 5 and followed.last is not None and followed.last.output == "down"
