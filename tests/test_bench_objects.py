"""`python -m bench objects` at a tiny size, and whether each library's models really hold Docker's objects.

No timing thresholds (this machine's speed is not the code's behaviour): the tests check that every installed
library is measured in every scenario with the figures a reader needs, that a missing library is reported
rather than fatal, and that what each library decodes is the same data as today's dicts -- a snapshot, a
service create with Docker's defaults filled in, the API's JSON -- so the timings compare like with like.
"""

import json
import sys
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench` is not installed; plain `pytest` does not put the checkout on the path

from bench import objects

TINY = ["--tasks", "40", "--services", "3", "--nodes", "2", "--repeats", "2", "--requests", "2", "--json-only"]
FIELDS = {"bench", "library", "scenario", "p50_ms", "min_ms", "ratio_to_dict"}

# Docker's defaults (`docker service create --help`): what a spec that leaves them out gets.
UPDATE_DEFAULTS = {
    "Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5_000_000_000, "MaxFailureRatio": 0,
    "Order": "stop-first",
}
RESTART_DEFAULTS = {"Condition": "any", "Delay": 5_000_000_000, "MaxAttempts": 0, "Window": 0}


def installed_libraries() -> list[str]:
    found = []
    for library in objects.LIBRARIES:
        try:
            objects.build(library)
        except objects.NotInstalled:
            continue
        found.append(library)
    return found


def candidate(library: str) -> objects.Candidate:
    try:
        return objects.build(library)
    except objects.NotInstalled as exc:
        pytest.skip(str(exc))


def plain(value):
    """JSON's shapes: tuples (a stored entry, the snapshot) as lists."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def run_bench(capsys, *args: str) -> tuple[list[dict], str]:
    assert objects.main([*TINY, *args]) == 0
    printed = capsys.readouterr()
    return [json.loads(line) for line in printed.out.splitlines()], printed.err


@pytest.fixture(scope="module")
def snapshot() -> bytes:
    return objects.store_snapshot(tasks=40, services=3, nodes=2)


def test_every_installed_library_is_measured_in_every_scenario_against_the_dict_baseline(capsys):
    records, _ = run_bench(capsys)
    *measured, summary = records
    libraries = ["dict", *installed_libraries()]
    assert [(r["library"], r["scenario"]) for r in measured] == [
        (library, scenario) for library in libraries for scenario in objects.SCENARIOS
    ]
    for record in measured:
        assert FIELDS <= record.keys() and record["bench"] == "objects"
        assert 0 < record["min_ms"] <= record["p50_ms"]
    baseline = {r["scenario"]: r["p50_ms"] for r in measured if r["library"] == "dict"}
    for record in measured:
        ratio = record["p50_ms"] / baseline[record["scenario"]]
        assert record["ratio_to_dict"] == pytest.approx(ratio, rel=0.02, abs=0.01)
    assert summary["bench"] == "objects" and summary["summary"] is True
    assert summary["tasks"] == 40 and summary["missing"] == sorted(set(objects.LIBRARIES) - set(libraries))
    assert summary["dict_validation"].endswith(".validate_service_spec")
    assert set(summary["ratios"]) == set(libraries) - {"dict"}
    for record in measured:
        if record["library"] != "dict":
            assert summary["ratios"][record["library"]][record["scenario"]] == record["ratio_to_dict"]


def test_a_library_that_is_not_installed_is_reported_and_the_others_still_measured(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "msgspec", None)  # makes `import msgspec` fail, as on a CI without it
    records, errors = run_bench(capsys, "--libraries", "msgspec")
    *measured, summary = records
    assert "msgspec is not installed" in errors and "pip install msgspec" in errors
    assert {r["library"] for r in measured} == {"dict"}
    assert summary["missing"] == ["msgspec"]


@pytest.mark.parametrize("library", objects.LIBRARIES)
def test_a_decoded_snapshot_holds_typed_objects_with_exactly_the_stored_data(library, snapshot):
    model = candidate(library)
    stored = msgpack.unpackb(snapshot)
    decoded = model.decode_snapshot(snapshot)
    _, collections = decoded
    task_id, (_, _, task) = next(iter(collections.tasks.items()))
    assert not isinstance(task, dict)
    assert task.Status.State == stored[1]["tasks"][task_id][2]["Status"]["State"]
    assert task.Spec.RestartPolicy.Condition == "any"
    assert plain(model.to_builtins(decoded)) == stored
    assert msgpack.unpackb(model.encode_snapshot(decoded)) == stored


@pytest.mark.parametrize("library", objects.LIBRARIES)
def test_the_api_json_of_a_snapshot_is_what_the_dicts_give(library, snapshot):
    model, baseline = candidate(library), objects.build("dict")
    expected = baseline.api_round_trip(baseline.decode_snapshot(snapshot))
    assert {len(views) for views in expected.values()} == {2, 3, 40}
    assert plain(model.to_builtins(model.api_round_trip(model.decode_snapshot(snapshot)))) == expected


@pytest.mark.parametrize("library", objects.LIBRARIES)
def test_service_create_stores_the_request_with_dockers_defaults_filled_in(library):
    request = objects.service_create_request()
    expected = json.loads(request)
    assert "UpdateConfig" not in expected and "RollbackConfig" not in expected  # the defaults are the library's
    expected["UpdateConfig"] = expected["RollbackConfig"] = UPDATE_DEFAULTS
    expected["TaskTemplate"]["RestartPolicy"] = {**RESTART_DEFAULTS, "Condition": "on-failure", "MaxAttempts": 3}
    assert msgpack.unpackb(candidate(library).create_service(request)) == expected


def test_the_dict_baseline_stores_the_request_as_validated_without_defaults():
    request = objects.service_create_request()
    assert msgpack.unpackb(objects.build("dict").create_service(request)) == json.loads(request)


@pytest.mark.parametrize("library", ["dict", *objects.LIBRARIES])
@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda spec: spec["TaskTemplate"]["RestartPolicy"].update(Condition="sometimes"), id="enum"),
        pytest.param(lambda spec: spec["TaskTemplate"]["ContainerSpec"].update(StopGracePeriod=-1), id="negative"),
        pytest.param(lambda spec: spec["EndpointSpec"]["Ports"][0].update(TargetPort=70000), id="port"),
        pytest.param(lambda spec: spec.update(Name="-web"), id="name"),
        pytest.param(lambda spec: spec["TaskTemplate"].pop("ContainerSpec"), id="required"),
    ],
)
def test_service_create_refuses_a_spec_that_breaks_dockers_types(library, change):
    model = candidate(library)
    spec = json.loads(objects.service_create_request())
    change(spec)
    with pytest.raises(model.invalid_spec):
        model.create_service(json.dumps(spec).encode())
