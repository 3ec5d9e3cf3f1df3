"""Property tests: whatever a config file or a broker message holds, the result is a Config
(or a handled message) or one clear line, never a traceback (issue 10, item 7)."""

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import Config, MqttConfig
from edge.config.loader import load_config
from edge.daemon.router import EventRouter
from edge.errors import ConfigError
from edge.mqtt.monitor import Monitor
from edge.mqtt.schema import event_problem, parse_status

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def key_paths(cls: type, prefix: tuple = ()) -> list:
    """Every settable key of the config, as a path of names."""
    paths = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            paths += key_paths(hints[field.name], prefix + (field.name,))
        else:
            paths.append(prefix + (field.name,))
    return paths


KEYS = key_paths(Config)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10 ** 40, max_value=10 ** 40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=5)), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)


def nested(assignments: dict) -> dict:
    document: dict = {}
    for path, value in assignments.items():
        node = document
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return document


def load_or_one_line(path: Path):
    try:
        return load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return None


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_random_values_for_every_key_give_a_config_or_one_line(tmp_path, assignments):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(nested(assignments), allow_unicode=True), encoding="utf-8")
    config = load_or_one_line(path)
    if config is not None:
        assert isinstance(config, Config)


YAML_NODES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children,
                                                                                max_size=4)),
    max_leaves=20)


@FUZZ
@given(st.one_of(st.text(max_size=200), YAML_NODES.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))))
def test_random_yaml_documents_give_a_config_or_one_line(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    load_or_one_line(path)


@pytest.mark.parametrize("text, says", [
    ("a: " + "[" * 20000 + "]" * 20000, "nested too deeply"),
    ("fall:\n  confirm_s: .inf\n", "'fall.confirm_s' must be a finite number"),
    ("fall:\n  confirm_s: .nan\n", "'fall.confirm_s' must be a finite number"),
    ("detector:\n  threads: 100000\n", "'detector.threads' must be between 1 and 64"),
    ("tracker:\n  min_hits: -3\n", "'tracker.min_hits' must be at least 1"),
    ("buzzer:\n  pin: -1\n", "'buzzer.pin' must be a GPIO number"),
    ("fall:\n  confirm_s: 0.4\n  confirm_s: 9\n", "key 'confirm_s' appears twice (line 3)"),
    ("fall:\n  confirm_s: 1e308\n", None),  # a number (YAML 1.1 read it as text), and a valid one
])
def test_config_inputs_that_used_to_crash_or_mislead(tmp_path, text, says):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    if says is None:
        assert load_config(path).fall.confirm_s == 1e308
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children,
                                                                                max_size=6)),
    max_leaves=25)
EVENT_LIKE = st.fixed_dictionaries(
    {"event_id": st.one_of(st.uuids().map(str), st.text(max_size=40), st.integers(), st.none()),
     "type": st.one_of(st.sampled_from(["fall_detected", "alarm", "recovered", "acknowledged"]), JSON_VALUES),
     "track_id": st.one_of(st.integers(), JSON_VALUES)},
    optional={"bbox": JSON_VALUES, "confidence": JSON_VALUES, "device": JSON_VALUES, "seq": JSON_VALUES})


@pytest.fixture(scope="module")
def monitor(tmp_path_factory):
    watcher = Monitor(MqttConfig(enabled=True), tmp_path_factory.mktemp("monitor") / "m.sqlite", everything=True)
    yield watcher
    watcher.stop()


@FUZZ
@given(st.one_of(JSON_VALUES, EVENT_LIKE))
def test_any_event_payload_is_checked_without_raising(monitor, event):
    problem = event_problem(event, "edge1", "cam0")
    assert problem is None or isinstance(problem, str)
    before = len(monitor.events())
    skipped = monitor.skipped
    monitor._on_event("edge1", "cam0", "fall/edge1/cam0/events", json.dumps(event).encode())
    if problem is None:  # kept (once: a repeated event_id is a duplicate)
        assert monitor.skipped == skipped and monitor.device_of(event["event_id"]) == "edge1"
    else:  # skipped with its reason
        assert monitor.skipped == skipped + 1 and len(monitor.events()) == before


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_event_status_or_ack_are_handled(monitor, payload):
    monitor._on_event("edge1", "cam0", "fall/edge1/cam0/events", payload)
    monitor._on_health("edge1", "fall/edge1/health", payload)  # what the console also keeps
    monitor._on_camera_status("edge1", "cam0", "fall/edge1/cam0/status", payload)
    monitor._on_snapshot("edge1", "cam0", "fall/edge1/cam0/snapshot", payload)
    assert parse_status(payload)[2] is None or payload.strip() not in (b"online", b"offline")
    request = EventRouter._ack_request(payload)
    if request is not None:
        event_id, operator = request
        assert len(event_id) == 36 and (operator is None or (0 < len(operator) <= 64 and operator.isprintable()))


def test_an_unknown_key_with_a_newline_is_still_one_line(tmp_path):
    """Found by the property test above: `? '\\n\\n'` made a two-line error."""
    path = tmp_path / "config.yaml"
    path.write_text("? '\n\n'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value) and "unknown key '\\n'" in str(caught.value)
