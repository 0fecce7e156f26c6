"""The chaos suite's operation history (`chaos.cluster.history`) and its linearizability checker
(`chaos.cluster.linearizability`): registers with read, write and compare-and-set, where `fail` operations
had no effect and `info` ones may or may not have taken effect.

Besides hand-written histories for each rule, two properties: every history produced by a real atomic
register (each effect at one instant inside its operation's interval) is linearizable, and on small random
histories, linearizable or not, the checker agrees with a brute-force search over every order.
"""

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.cluster import linearizability
from chaos.cluster.history import History, Operation
from chaos.cluster.linearizability import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, check

GENEROUS_TIMEOUT = 60.0
"""Seconds; far more than any history here needs, so only a broken checker runs into it."""
SHORTEST = 0.001
"""Seconds: the least time between a simulated client's events, so that its invoke and completion never tie."""
INF = math.inf


def op(f, input=None, output=None, call=0.0, ret=1.0, status="ok", key="x", process=0):
    """An operation as `History.operations` gives it: ok writes and cas echo their input as output."""
    if status == "ok" and f != "read":
        output = input
    if status != "ok":
        output = None
    if status == "info":
        ret = INF
    return Operation(process, f, key, input, output, call, ret, status, invoke_index=0)


def verdict(*operations, timeout=GENEROUS_TIMEOUT):
    return check(list(operations), timeout)


# --- the register model --------------------------------------------------------------------------------------


def test_sequential_history_is_linearizable():
    result = verdict(
        op("read", output=None, call=0, ret=1),
        op("write", 1, call=2, ret=3),
        op("read", output=1, call=4, ret=5),
        op("cas", [1, 2], call=6, ret=7),
        op("read", output=2, call=8, ret=9),
    )
    assert result.result == LINEARIZABLE
    assert result.keys == {"x": LINEARIZABLE}
    assert result.failure is None


@pytest.mark.parametrize("seen", [None, 1])
def test_read_concurrent_with_a_write_may_see_the_old_or_the_new_value(seen):
    result = verdict(op("write", 1, call=0, ret=10, process=0), op("read", output=seen, call=1, ret=2, process=1))
    assert result.result == LINEARIZABLE


def test_stale_read_after_a_completed_write_is_not_linearizable():
    result = verdict(
        op("write", 1, call=0, ret=1, process=0),
        op("write", 2, call=2, ret=3, process=0),
        op("read", output=1, call=4, ret=5, process=1),
    )
    assert result.result == NOT_LINEARIZABLE
    assert result.keys == {"x": NOT_LINEARIZABLE}
    failure = result.failure
    assert failure["key"] == "x"
    assert [(o["f"], o["input"]) for o in failure["linearized"]] == [("write", 1), ("write", 2)]
    assert failure["value"] == 2
    assert [(o["f"], o["output"], o["process"]) for o in failure["pending"]] == [("read", 1, 1)]


def test_read_of_a_value_never_written_is_not_linearizable():
    result = verdict(op("write", 1, call=0, ret=1), op("read", output=7, call=2, ret=3))
    assert result.result == NOT_LINEARIZABLE


def test_read_of_an_unset_register_returns_none():
    assert verdict(op("read", output=None), op("write", 1, call=2, ret=3)).result == LINEARIZABLE
    assert verdict(op("read", output=1, call=0, ret=1), op("write", 1, call=2, ret=3)).result == NOT_LINEARIZABLE


def test_operations_touching_at_one_instant_count_as_concurrent():
    """write(2) is invoked at the instant write(1) returns, so either may come first."""
    result = verdict(op("write", 1, call=0, ret=1), op("write", 2, call=1, ret=2), op("read", output=1, call=3, ret=4))
    assert result.result == LINEARIZABLE


# --- compare-and-set -----------------------------------------------------------------------------------------


def test_ok_cas_needs_its_expected_value_to_hold():
    result = verdict(op("write", 1, call=0, ret=1), op("cas", [2, 3], call=2, ret=3))
    assert result.result == NOT_LINEARIZABLE
    assert [o["f"] for o in result.failure["pending"]] == ["cas"]


def test_ok_cas_on_an_absent_register_expects_none():
    assert verdict(op("cas", [None, 1]), op("read", output=1, call=2, ret=3)).result == LINEARIZABLE


def test_ok_cas_sets_its_new_value():
    history = [op("write", 1, call=0, ret=1), op("cas", [1, 2], call=2, ret=3)]
    assert verdict(*history, op("read", output=2, call=4, ret=5)).result == LINEARIZABLE
    assert verdict(*history, op("read", output=1, call=4, ret=5)).result == NOT_LINEARIZABLE


def test_failed_operations_had_no_effect():
    result = verdict(
        op("write", 1, call=0, ret=1),
        op("cas", [1, 2], call=2, ret=3, status="fail"),
        op("write", 9, call=2, ret=3, status="fail"),
        op("read", output=1, call=4, ret=5),
    )
    assert result.result == LINEARIZABLE
    assert result.checked_operations == 2


# --- info: outcome unknown -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seen", [1, 2])
def test_a_later_read_may_or_may_not_see_an_info_write(seen):
    result = verdict(
        op("write", 1, call=0, ret=1, process=0),
        op("write", 2, call=2, status="info", process=1),
        op("read", output=seen, call=10, ret=11, process=2),
    )
    assert result.result == LINEARIZABLE


def test_an_info_write_takes_effect_once():
    """Once a read saw the info write's value, a read that starts later cannot see the older value."""
    result = verdict(
        op("write", 1, call=0, ret=1, process=0),
        op("write", 2, call=2, status="info", process=1),
        op("read", output=2, call=10, ret=11, process=2),
        op("read", output=1, call=12, ret=13, process=2),
    )
    assert result.result == NOT_LINEARIZABLE


def test_an_info_write_cannot_take_effect_before_its_call():
    result = verdict(
        op("read", output=2, call=0, ret=1, process=0),
        op("write", 2, call=2, status="info", process=1),
    )
    assert result.result == NOT_LINEARIZABLE


def test_an_info_write_may_take_effect_long_after_its_client_gave_up():
    result = verdict(
        op("write", 2, call=0, status="info", process=1),
        op("write", 1, call=5, ret=6, process=0),
        op("read", output=1, call=7, ret=8, process=0),
        op("read", output=2, call=100, ret=101, process=0),
    )
    assert result.result == LINEARIZABLE


def test_an_info_cas_takes_effect_only_where_its_expected_value_holds():
    base = [op("write", 1, call=0, ret=1), op("cas", [1, 2], call=2, status="info", process=1)]
    assert verdict(*base, op("read", output=2, call=5, ret=6)).result == LINEARIZABLE
    blocked = [op("write", 3, call=0, ret=1), op("cas", [1, 2], call=2, status="info", process=1)]
    assert verdict(*blocked, op("read", output=2, call=5, ret=6)).result == NOT_LINEARIZABLE


def test_an_info_write_tried_too_early_stays_available_for_later():
    """The only valid order is write(1), cas(1 -> None), write(3), read 3. The search first dead-ends with both
    info writes placed before the cas; that must not rule out the state with only write(1) placed, from which
    write(3) can still come after the cas. (Pruning by the wrong direction of "fewer info operations done"
    calls this history not linearizable.)"""
    result = verdict(
        op("cas", [1, None], call=6, ret=6, process=0),
        op("write", 3, call=2, status="info", process=1),
        op("write", 1, call=6, status="info", process=2),
        op("read", output=3, call=10, ret=12, process=0),
    )
    assert result.result == LINEARIZABLE


def test_info_reads_say_nothing():
    result = verdict(op("write", 1, call=0, ret=1), op("read", call=2, status="info"))
    assert result.result == LINEARIZABLE
    assert result.checked_operations == 1


# --- keys, verdict shape, timeout ----------------------------------------------------------------------------


def test_keys_are_independent_registers():
    result = verdict(
        op("write", 1, call=0, ret=1, key="x"),
        op("read", output=1, call=2, ret=3, key="y"),
        op("read", output=1, call=2, ret=3, key="x"),
    )
    assert result.result == NOT_LINEARIZABLE
    assert result.keys == {"x": LINEARIZABLE, "y": NOT_LINEARIZABLE}
    assert result.failure["key"] == "y"


def test_a_key_with_only_failed_operations_is_trivially_linearizable():
    result = verdict(op("write", 1, status="fail", key="z"), timeout=0)
    assert result.keys == {"z": LINEARIZABLE}
    assert result.result == LINEARIZABLE


def test_verdict_json_is_strict_json_even_with_unknown_return_times():
    result = verdict(
        op("write", 1, call=0, ret=1),
        op("write", 2, call=0.5, status="info", process=1),
        op("read", output=2, call=2, ret=3),
        op("read", output=1, call=4, ret=5),
    )
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert document["result"] == NOT_LINEARIZABLE
    assert {o["ret"] for o in document["failure"]["linearized"] + document["failure"]["pending"]} >= {None}


def test_timeout_zero_is_unknown_never_a_pass():
    history = simulated_register(random.Random(1), clients=8, operations=3000, info_rate=0.01)
    result = check(history, timeout=0)
    assert result.result == UNKNOWN
    assert set(result.keys.values()) == {UNKNOWN}


def test_a_search_cut_off_midway_is_unknown():
    """Twenty concurrent writes and then a read of a value none wrote: the search must try every order of
    the writes (2^20 sets of them) before it can say no; a tenth of a second is far too little."""
    writes = [op("write", v, call=0, ret=10, process=v) for v in range(20)]
    result = verdict(*writes, op("read", output=99, call=11, ret=12, process=99), timeout=0.1)
    assert result.result == UNKNOWN


def test_a_search_that_exhausts_its_state_budget_is_unknown(monkeypatch):
    monkeypatch.setattr(linearizability, "MAX_FAILED_STATES", 100)
    writes = [op("write", v, call=0, ret=10, process=v) for v in range(20)]
    result = verdict(*writes, op("read", output=99, call=11, ret=12, process=99))
    assert result.result == UNKNOWN


def test_a_long_concurrent_history_with_info_writes_is_judged():
    """The shape of a chaos run's busiest register: 3,000 operations from 8 concurrent clients, a few dozen
    with unknown outcome. No timing threshold: the timeout is only a backstop."""
    history = simulated_register(random.Random(7), clients=8, operations=3000, info_rate=0.025)
    assert sum(o.status == "info" and o.f != "read" for o in history.operations()) >= 24
    result = check(history, timeout=GENEROUS_TIMEOUT)
    assert result.result == LINEARIZABLE
    assert result.checked_operations > 2000


# --- properties ----------------------------------------------------------------------------------------------


def simulated_register(rng, clients, operations, info_rate, keys=("x",)):
    """A history as real atomic registers produce it, so linearizable by construction: every operation takes
    effect at one instant inside its interval; an info one at any instant after its call (its client gave up
    at the drawn return time, but the request may still land) or never; a failed one never. Written values are
    unique, as the chaos workload's are; a cas expects the current value or an older one."""
    values = itertools.count(1)
    free_at = [0.0] * clients
    planned = []
    for _ in range(operations):
        lane = rng.randrange(clients)
        call = free_at[lane] + SHORTEST + rng.expovariate(10.0)
        ret = call + SHORTEST + rng.expovariate(2.0)
        free_at[lane] = ret
        f = rng.choice(("read", "read", "write", "cas"))
        status = "info" if rng.random() < info_rate else "fail" if rng.random() < 0.05 else "ok"
        if status == "ok":
            effect = rng.uniform(call, ret)
        elif status == "info" and rng.random() < 0.5:
            effect = call + rng.uniform(0.0, 3.0)
        else:
            effect = None
        planned.append(
            {
                "lane": lane,
                "f": f,
                "key": rng.choice(keys),
                "call": call,
                "ret": ret,
                "effect": effect,
                "status": status,
                "expect_current": rng.random() < 0.6,
                "older": rng.random(),
            }
        )
    register, written = {}, {key: [None] for key in keys}
    for plan in sorted((p for p in planned if p["effect"] is not None), key=lambda p: p["effect"]):
        key, current = plan["key"], register.get(plan["key"])
        if plan["f"] == "read":
            plan["output"] = current
        elif plan["f"] == "write":
            plan["input"] = next(values)
            register[key] = plan["input"]
        else:
            expected = current if plan["expect_current"] else written[key][int(plan["older"] * len(written[key]))]
            plan["input"] = [expected, next(values)]
            if expected == current:
                register[key] = plan["input"][1]
            elif plan["status"] == "ok":
                plan["status"] = "fail"
        if plan["f"] != "read":
            written[key].append(plan["input"] if plan["f"] == "write" else plan["input"][1])
    for plan in planned:
        if plan["f"] != "read" and "input" not in plan:
            plan["input"] = next(values) if plan["f"] == "write" else [rng.choice(written[plan["key"]]), next(values)]

    history = History()
    process, fresh, invoked = list(range(clients)), itertools.count(clients), {}
    events = sorted(
        [(p["call"], 1, i) for i, p in enumerate(planned)] + [(p["ret"], 0, i) for i, p in enumerate(planned)]
    )
    for at, is_invoke, i in events:
        plan = planned[i]
        if is_invoke:
            invoked[i] = history.invoke(process[plan["lane"]], plan["f"], plan["key"], plan.get("input"), at)
        elif plan["status"] == "ok" and plan["f"] == "read":
            history.complete(invoked[i], "ok", at, value=plan["output"])
        else:
            history.complete(invoked[i], plan["status"], at, error=None if plan["status"] == "ok" else "timeout")
            if plan["status"] == "info":
                process[plan["lane"]] = next(fresh)
    return history


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 6),
    operations=st.integers(1, 60),
    info_rate=st.sampled_from([0.0, 0.1, 0.3]),
    keys=st.sampled_from([("x",), ("x", "y")]),
)
def test_every_history_of_a_real_register_is_linearizable(seed, clients, operations, info_rate, keys):
    history = simulated_register(random.Random(seed), clients, operations, info_rate, keys)
    result = check(history, timeout=GENEROUS_TIMEOUT)
    assert result.result == LINEARIZABLE, result.failure


def brute_force_linearizable(operations):
    """Is there an order of the ok operations plus any subset of the info ones that puts every operation after
    those that returned before it was called, and in which each one is legal for the register? Failed
    operations are left out; an info read constrains nothing either way."""
    required = [o for o in operations if o.status == "ok"]
    optional = [o for o in operations if o.status == "info" and o.f != "read"]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(required + list(chosen)):
                if _respects_real_time(order) and _legal(order):
                    return True
    return False


def _respects_real_time(order):
    return not any(later.ret < earlier.call for i, earlier in enumerate(order) for later in order[i + 1 :])


def _legal(order):
    register = {}
    for o in order:
        current = register.get(o.key)
        if o.f == "read" and o.output != current:
            return False
        if o.f == "write":
            register[o.key] = o.input
        if o.f == "cas":
            if o.input[0] != current:
                return False
            register[o.key] = o.input[1]
    return True


SMALL_VALUES = st.sampled_from([None, 1, 2, 3])


@st.composite
def small_histories(draw):
    """Up to six operations on one or two keys with few distinct values and coarse times, so that ties,
    repeated values, stale reads and impossible compare-and-sets all come up."""
    operations = []
    for number in range(draw(st.integers(1, 6))):
        f = draw(st.sampled_from(["read", "write", "cas"]))
        status = draw(st.sampled_from(["ok", "ok", "ok", "fail", "info"]))
        call = draw(st.integers(0, 8))
        ret = call + draw(st.integers(0, 4))
        key = draw(st.sampled_from(["x", "x", "y"]))
        value = (
            None if f == "read" else draw(SMALL_VALUES) if f == "write" else [draw(SMALL_VALUES), draw(SMALL_VALUES)]
        )
        output = draw(SMALL_VALUES) if f == "read" else None
        operations.append(op(f, value, output, call, ret, status, key, process=number))
    return operations


@settings(max_examples=500, deadline=None)
@given(small_histories())
def test_checker_agrees_with_brute_force_on_small_histories(operations):
    expected = LINEARIZABLE if brute_force_linearizable(operations) else NOT_LINEARIZABLE
    assert check(operations, timeout=GENEROUS_TIMEOUT).result == expected


# --- the history recorder ------------------------------------------------------------------------------------


def test_history_json_round_trip_keeps_every_event_and_operation():
    history = simulated_register(random.Random(3), clients=4, operations=200, info_rate=0.1, keys=("x", "y"))
    restored = History.from_json(json.loads(json.dumps(history.to_json(), allow_nan=False)))
    assert restored.events == history.events
    assert restored.operations() == history.operations()
    assert check(restored, GENEROUS_TIMEOUT).to_json()["keys"] == check(history, GENEROUS_TIMEOUT).to_json()["keys"]


def test_history_pairs_completions_with_invokes_and_echoes_written_values():
    history = History()
    write = history.invoke(0, "write", "x", 5, 0.0)
    read = history.invoke(1, "read", "x", None, 0.1)
    cas = history.invoke(2, "cas", "x", (5, 6), 0.2)
    history.complete(read, "ok", 0.3, value=None)
    history.complete(write, "ok", 0.4)
    history.complete(cas, "info", 0.5, error="timed out")
    history.invoke(3, "write", "y", 7, 0.6)  # never completes
    assert [(o.f, o.input, o.output, o.status, o.ret) for o in history.operations()] == [
        ("write", 5, 5, "ok", 0.4),
        ("read", None, None, "ok", 0.3),
        ("cas", [5, 6], None, "info", INF),
        ("write", 7, None, "info", INF),
    ]
    assert history.events[-2].error == "timed out"
    assert history.summary() == {
        "read": {"ok": 1, "fail": 0, "info": 0},
        "write": {"ok": 1, "fail": 0, "info": 1},
        "cas": {"ok": 0, "fail": 0, "info": 1},
    }


def test_a_process_has_one_operation_outstanding():
    """After an info completion the old request may still be in flight: the client must take a new process ID."""
    history = History()
    history.invoke(0, "write", "x", 1, 0.0)
    with pytest.raises(ValueError, match="new process ID"):
        history.invoke(0, "read", "x", None, 0.1)


def test_an_ok_read_must_say_what_it_read():
    history = History()
    read = history.invoke(0, "read", "x", None, 0.0)
    with pytest.raises(ValueError, match="value it read"):
        history.complete(read, "ok", 0.1)


def test_an_operation_completes_once():
    history = History()
    write = history.invoke(0, "write", "x", 1, 0.0)
    history.complete(write, "ok", 0.1)
    with pytest.raises(ValueError, match="completes once"):
        history.complete(write, "fail", 0.2)


def test_from_json_refuses_a_completion_nobody_invoked():
    events = [
        {"index": 0, "process": 4, "type": "ok", "f": "write", "key": "x", "value": 1, "time": 0.0, "error": None}
    ]
    with pytest.raises(ValueError, match="had not invoked"):
        History.from_json(events)
