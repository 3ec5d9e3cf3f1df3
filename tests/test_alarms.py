"""Buzzer (gpiozero MockFactory pins), spoken warnings (real espeak-ng), and the outbox."""

import logging
import shutil
import sys
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest
from broker import wait_for
from gpiozero.pins.mock import MockFactory

from edge.alarms.buzzer import Buzzer, make_pin_factory
from edge.alarms.controller import LocalAlarm
from edge.alarms.speech import Speaker, synthesize
from edge.config import BuzzerConfig, SpeechConfig
from edge.errors import ConfigError
from edge.mqtt.outbox import Outbox
from edge.types import FallEvent


def event(kind, track_id=1, event_id=None):
    return FallEvent(event_id=event_id or f"{kind}-{track_id}", type=kind, camera="cam0", track_id=track_id,
                     stream_time_s=1.0, wall_time="t", confidence=0.9, torso_angle_deg=80.0, bbox=[0, 0, 1, 1])


# -- buzzer ---------------------------------------------------------------------------------


def test_buzzer_patterns_differ_and_stop_by_themselves():
    """The pin's own record (gpiozero's mock pins time every change): the fall pattern beeps
    0.05 s on / 0.05 s off, the alarm pattern 0.3 s on; after auto_stop_s the pin stays low."""
    import statistics

    factory = MockFactory()
    config = BuzzerConfig(enabled=True, pin=17, fall_pattern_s=[0.05, 0.05], alarm_pattern_s=[0.3, 0.05],
                          auto_stop_s=1.0)
    buzzer = Buzzer(config, pin_factory=factory)
    pin = factory.pin(17)

    def on_times() -> list:  # each change records the time since the previous one
        return [state.timestamp for state in pin.states[1:] if state.state is False or state.state == 0]

    try:
        buzzer.sound("fall_detected")
        assert wait_for(lambda: len(on_times()) >= 4, 2.0)
        fall_on = statistics.median(on_times())
        pin.clear_states()
        buzzer.sound("alarm")
        assert wait_for(lambda: len(on_times()) >= 2, 2.0)
        alarm_on = statistics.median(on_times())
        assert 0.03 <= fall_on <= 0.12 and 0.25 <= alarm_on <= 0.45
        assert wait_for(lambda: not buzzer.is_sounding, 2.0)
        stopped = len(pin.states)
        assert wait_for(lambda: not pin.state, 1.0)
        time.sleep(0.4)  # longer than either pattern's period: a beep still running would show
        assert not pin.state and len(pin.states) <= stopped + 1
    finally:
        buzzer.close()


def test_active_low_buzzer_is_silent_high():
    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=27, active_high=False), pin_factory=factory)
    try:
        assert factory.pin(27).state  # idle: pin high = silent for an active-low buzzer
        buzzer.sound("alarm")
        time.sleep(0.1)
        assert not factory.pin(27).state
        buzzer.stop()
        assert factory.pin(27).state
    finally:
        buzzer.close()


def test_pin_factory_choice():
    assert make_pin_factory("default") is None
    with pytest.raises(ConfigError, match="unknown: use default, jetson or mock"):
        make_pin_factory("wiringpi")


def fake_jetson_gpio(monkeypatch, calls: list, setup_warning: str = ""):
    """Jetson.GPIO is the hardware edge: a recording stand-in module takes its place here. With
    setup_warning, setup() warns as Jetson.GPIO does (warnings.warn) when warnings are on."""
    import warnings

    fake = types.ModuleType("Jetson.GPIO")
    state = {"warnings": True}

    def setup(pin, direction):
        calls.append(("setup", pin, direction))
        if setup_warning and state["warnings"]:
            warnings.warn(setup_warning, RuntimeWarning, stacklevel=2)

    fake.BCM, fake.IN, fake.OUT, fake.HIGH, fake.LOW = "BCM", "IN", "OUT", 1, 0
    fake.setwarnings = lambda flag: state.update(warnings=flag)
    fake.setmode = lambda mode: calls.append(("setmode", mode))
    fake.setup = setup
    fake.output = lambda pin, value: calls.append(("output", pin, value))
    fake.input = lambda pin: 0
    fake.cleanup = lambda pin: calls.append(("cleanup", pin))
    package = types.ModuleType("Jetson")
    package.GPIO = fake
    monkeypatch.setitem(sys.modules, "Jetson", package)
    monkeypatch.setitem(sys.modules, "Jetson.GPIO", fake)


def test_jetson_pin_warnings_are_heard_and_a_pinmux_one_is_an_error(monkeypatch):
    """setwarnings(False) hid Jetson.GPIO's warning that a pin is not a GPIO in the pinmux: the
    buzzer stayed silent while the doctor said 'opened'. Now that warning fails the buzzer with
    the fix (logged once, in health and the doctor); 'already in use' stays harmless."""
    from edge.alarms.buzzer import ResilientBuzzer

    pinmux = "Pin 12 (GPIO18) is not configured as GPIO in the pinmux; it may not work as expected"
    fake_jetson_gpio(monkeypatch, [], setup_warning=pinmux)
    buzzer = ResilientBuzzer(BuzzerConfig(enabled=True, pin=18, pin_factory="jetson"))
    try:
        assert buzzer.error is not None and pinmux in buzzer.error and "jetson-io" in buzzer.error
    finally:
        buzzer.close()
    calls = []
    fake_jetson_gpio(monkeypatch, calls, setup_warning="This channel is already in use, continuing anyway.")
    buzzer = ResilientBuzzer(BuzzerConfig(enabled=True, pin=18, pin_factory="jetson"))
    try:
        assert buzzer.error is None and ("setup", 18, "OUT") in calls
    finally:
        buzzer.close()


def test_jetson_factory_drives_jetson_gpio(monkeypatch):
    """Jetson.GPIO is the hardware edge: a recording stand-in module takes its place here."""
    calls = []
    fake_jetson_gpio(monkeypatch, calls)
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=18, pin_factory="jetson", alarm_pattern_s=[0.05, 0.05]))
    buzzer.sound("alarm")
    time.sleep(0.3)
    buzzer.close()
    assert ("setmode", "BCM") in calls and ("setup", 18, "OUT") in calls
    outputs = [c[2] for c in calls if c[0] == "output"]
    assert 1 in outputs and outputs[-1] == 0


def test_a_flood_of_alarm_tests_never_delays_the_real_warning(caplog):
    """20 `cmd/test` just before a fall: one test runs, the rest are dropped, and the fall's
    warning cuts the test short instead of waiting behind it."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=23), pin_factory=factory)
    speaker = Speaker(SpeechConfig(repeat_interval_s=60))
    alarm = LocalAlarm(buzzer, speaker)
    try:
        with caplog.at_level(logging.WARNING):
            ran = [alarm.test() for _ in range(20)]
        assert ran == [True] + [False] * 19
        assert caplog.text.count("alarm test ignored") == 1  # a flood logs one line
        assert wait_for(lambda: "test" in speaker.announced, 10)
        fall_at = time.monotonic()
        alarm.handle(event("fall_detected", 1))
        assert wait_for(lambda: "fall_detected" in speaker.announced, 10)
        assert time.monotonic() - fall_at < 2.0  # not after 20 tests of several seconds each
        assert list(speaker.announced) == ["test", "fall_detected"]
        assert not alarm.test()  # never in place of a real alarm ...
        time.sleep(2.5)  # ... and the test's short beep does not stop the fall's buzzer
        assert buzzer.is_sounding and buzzer.pattern == "fall_detected"
    finally:
        alarm.close()


def test_stopping_one_fall_keeps_the_other_falls_warning():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    speaker = Speaker(SpeechConfig(repeat_interval_s=60))
    try:
        speaker.start("cam0#1", "fall_detected")
        speaker.start("cam0#2", "alarm")
        speaker.stop("cam0#1")  # an ack for the first fall
        assert wait_for(lambda: "alarm" in speaker.announced, 30)
    finally:
        speaker.close()


def test_local_alarm_chains_and_acknowledgement():
    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=22), pin_factory=factory)
    alarm = LocalAlarm(buzzer, None)
    try:
        alarm.handle(event("fall_detected", 1))
        alarm.handle(event("alarm", 2))
        assert buzzer.pattern == "alarm"
        assert alarm.acknowledge("alarm-2") == ("cam0", 2)
        assert buzzer.pattern == "fall_detected"  # track 1 still down
        assert alarm.acknowledge("no-such-event") is None
        alarm.handle(event("recovered", 1))
        assert not buzzer.is_sounding
    finally:
        alarm.close()


def test_an_acknowledged_fall_stays_quiet_when_its_alarm_comes():
    """Issue 30, defect 9: the same fall's later `alarm` (still down after the hold) restarted the
    buzzer after the operator's ack. A new fall on the track, or another track, still sounds."""
    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=23), pin_factory=factory)
    alarm = LocalAlarm(buzzer, None)
    try:
        alarm.handle(event("fall_detected", 1))
        assert alarm.acknowledge("fall_detected-1") == ("cam0", 1)
        assert not buzzer.is_sounding
        alarm.handle(event("alarm", 1))  # the hold passed; the operator already knows
        assert not buzzer.is_sounding
        alarm.handle(event("alarm", 2))
        assert buzzer.is_sounding and buzzer.pattern == "alarm"
        alarm.handle(event("recovered", 2))
        alarm.handle(event("recovered", 1))
        alarm.handle(event("fall_detected", 1))  # a new fall of the same person
        assert buzzer.is_sounding and buzzer.pattern == "fall_detected"
    finally:
        alarm.close()


def test_a_danger_zone_warning_chirps_briefly_speaks_once_and_never_replaces_a_fall():
    """Issue 31: intrusion sounds the zone pattern (not a fall's) for buzzer.zone_warning_s and
    its own sentence once; many people walking in together are one sentence; during a fall's
    alarm the fall's pattern stays."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=24, zone_pattern_s=[0.05, 0.1], zone_warning_s=0.6),
                    pin_factory=factory)
    speaker = Speaker(SpeechConfig(repeat_interval_s=60))
    alarm = LocalAlarm(buzzer, speaker)
    try:
        for track_id in (1, 2, 3):  # three people step in at once
            alarm.handle(event("intrusion", track_id))
        assert buzzer.pattern == "intrusion"
        assert wait_for(lambda: not buzzer.is_sounding, 2.0)  # chirps stop by themselves
        assert wait_for(lambda: "intrusion" in speaker.announced, 10)
        time.sleep(1.0)
        assert list(speaker.announced).count("intrusion") <= 2  # one speaking, at most one waited
        alarm.handle(event("fall_detected", 9))
        alarm.handle(event("approaching", 4))
        time.sleep(1.0)  # past zone_warning_s
        assert buzzer.pattern == "fall_detected"
        assert [voice for voice, _ in speaker.messages("intrusion")] == ["ko", "en"]
        assert "Danger area" in speaker.messages("intrusion")[1][1]
    finally:
        alarm.close()


# -- speech -----------------------------------------------------------------------------------


def wav_seconds_and_rms(path):
    with wave.open(str(path)) as handle:
        frames = handle.readframes(handle.getnframes())
        seconds = handle.getnframes() / handle.getframerate()
    samples = np.frombuffer(frames, dtype=np.int16).astype(np.float64)
    return seconds, float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0


@pytest.mark.parametrize("voice, field", [("ko", "fall_text"), ("en", "second_fall_text")])
def test_default_warnings_synthesise_to_speech(tmp_path, voice, field):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng; .ci/run does this)")
    config = SpeechConfig()
    target = tmp_path / f"{voice}.wav"
    synthesize(getattr(config, field), voice, target, config)
    seconds, rms = wav_seconds_and_rms(target)
    assert seconds > 4.0, "the full instructions take several seconds to say"
    assert rms > 500, "not silence"


def test_korean_numbers_are_written_as_words():
    config = SpeechConfig()
    assert "일일구" in config.fall_text and "119" not in config.fall_text + config.alarm_text


def test_speaker_never_blocks_and_goes_on_without_espeak(caplog):
    speaker = Speaker(SpeechConfig(command="espeak-ng-not-installed", repeat_interval_s=0.3))
    try:
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            speaker.start("cam0#1", "alarm")
            assert time.monotonic() - started < 0.1
            time.sleep(1.0)  # repeats several times ...
        assert caplog.text.count("espeak-ng-not-installed not found") == 1  # ... but says so once
        speaker.stop("cam0#1")
        assert not speaker.active
    finally:
        speaker.close()


def test_speaker_speaks_both_languages_in_order(tmp_path, monkeypatch):
    """The sound device is the hardware edge: a stand-in `aplay` first on PATH keeps every WAV it
    is asked to play. Each must be exactly espeak-ng's rendering of the configured text, Korean
    first, then English."""
    import os
    import stat

    from edge.alarms.speech import synthesize

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    played = tmp_path / "played"
    played.mkdir()
    fake = tmp_path / "bin" / "aplay"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\nn=$(ls {played} | wc -l)\ncp "$last" {played}/$n.wav\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    config = SpeechConfig(repeat_interval_s=60)
    speaker = Speaker(config)
    try:
        assert [voice for voice, _ in speaker.messages("test")] == ["ko", "en"]
        speaker.say("test")
        assert wait_for(lambda: len(list(played.iterdir())) >= 2, 30)
    finally:
        speaker.close()
    for index, (voice, text) in enumerate(speaker.messages("test")):
        expected = tmp_path / f"expected-{voice}.wav"
        synthesize(text, voice, expected, config)
        assert (played / f"{index}.wav").read_bytes() == expected.read_bytes(), voice
    assert speaker.spoken >= 2


# -- outbox -----------------------------------------------------------------------------------


def test_outbox_seq_is_monotonic_across_restarts(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    first = [outbox.put("t", {"event_id": str(i)}) for i in range(3)]
    outbox.remove(first[-1])
    outbox.close()
    reopened = Outbox(path)
    later = reopened.put("t", {"event_id": "x"})
    assert first == [1, 2, 3] and later == 4  # seq 3 was sent and removed; it is never reused
    assert [row.payload["seq"] for row in reopened.pending()] == [1, 2, 4]
    assert [row.seq for row in reopened.pending(after_seq=1)] == [2, 4]


def test_outbox_is_bounded_and_counts_what_it_drops(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite", max_events=5)
    for index in range(8):
        outbox.put("t", {"event_id": str(index)})
    assert outbox.depth() == 5 and outbox.dropped() == 3
    assert [row.payload["event_id"] for row in outbox.pending()] == ["3", "4", "5", "6", "7"]


def test_outbox_on_a_full_disk_keeps_events_in_memory_then_stores_them(tmp_path, caplog):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.put("t", {"event_id": "before"})
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite now answers "database or disk is full"
    with caplog.at_level(logging.ERROR):
        seqs = [outbox.put("t", {"event_id": f"full-{index}", "pad": "x" * 2000}) for index in range(50)]
    first_in_memory = seqs.index(None)  # the first insert may still fit in a half-empty page
    assert first_in_memory < 5 and all(seq is None for seq in seqs[first_in_memory:])
    assert caplog.text.count("cannot be used (disk full)") == 1
    assert "cannot rollback" not in caplog.text
    assert outbox.depth() == 51
    outbox._db.execute("PRAGMA max_page_count=1000000")  # space freed
    stored = [row.payload["event_id"] for row in outbox.pending(limit=100)]
    assert stored == ["before"] + [f"full-{index}" for index in range(50)]


def test_a_buzzer_that_cannot_be_opened_is_reported_retried_and_never_stops_the_alarm(monkeypatch, caplog):
    from gpiozero import LED

    from edge.alarms import buzzer as buzzer_module
    from edge.alarms.buzzer import ResilientBuzzer

    monkeypatch.setattr(buzzer_module, "RETRY_S", 0.0)
    factory = MockFactory()
    blocker = LED(24, pin_factory=factory)  # another program holds the line
    buzzer = ResilientBuzzer(BuzzerConfig(enabled=True, pin=24), pin_factory=factory)
    alarm = LocalAlarm(buzzer, None)
    try:
        with caplog.at_level(logging.ERROR):
            alarm.handle(event("fall_detected", 1))
            alarm.handle(event("alarm", 1))
        assert not buzzer.is_sounding and "cannot be opened" in alarm.problems()["buzzer"]
        assert caplog.text.count("cannot be opened") == 1  # once, not on every retry
        blocker.close()  # the line is free again
        alarm.handle(event("alarm", 1))
        assert buzzer.is_sounding and factory.pin(24).state
        assert alarm.problems() == {}
    finally:
        alarm.close()


def test_the_daemon_detects_without_a_gpio_driver(tmp_path, clips_dir):
    """This machine has no GPIO: the buzzer cannot open, the run goes on and prints its events."""
    from conftest import run_daemon_on_clip

    config = tmp_path / "config.yaml"
    config.write_text("buzzer:\n  enabled: true\n  pin_factory: default\n")
    result = run_daemon_on_clip(config, clips_dir / "gmdcsa24_s3_fall20.mp4")
    assert result.returncode == 0, result.stderr
    assert '"fall_detected"' in result.stdout and '"alarm"' in result.stdout
    assert result.stderr.count("cannot be opened") == 1 and "Traceback" not in result.stderr


def test_the_installed_gpiozero_is_the_range_setup_py_states():
    """jetson_pins.py is written against gpiozero 2.x's pin API and 1.6's (JetPack 4.6's Python 3.6,
    tests/test_jetpack46.py); setup.py must allow no other line, and the installed one is in range."""
    import re
    from importlib.metadata import version
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    lines = re.findall(r'"gpiozero>=([\d.]+),<(\d+); python_version([<>=]+)\'(3\.\d+)\'"', setup)
    assert lines == [("2.0", "3", ">=", "3.8"), ("1.6.2", "2", "<", "3.8")]
    assert 2 <= int(version("gpiozero").split(".")[0]) < 3  # this machine's Python is 3.8+


def test_an_acknowledgement_cuts_the_sentence_being_spoken(tmp_path, monkeypatch):
    """Issue 30, defect 9: an operator's ack let 13.4 s of Korean and 10.9 s of English play on.
    A stand-in `aplay` (the sound device is the hardware edge) plays for 20 s unless stopped."""
    import time

    from conftest import stand_in

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    started = tmp_path / "started"
    stand_in(tmp_path, monkeypatch, "aplay", f"echo x >> {started}\nexec sleep 20\n")
    speaker = Speaker(SpeechConfig(repeat_interval_s=60))
    try:
        speaker.start("cam0/1", "fall_detected")
        assert wait_for(lambda: started.exists(), 30)  # the Korean sentence is playing
        cut_at = time.monotonic()
        speaker.stop("cam0/1")
        assert wait_for(lambda: speaker._playing is None, 5)
        assert time.monotonic() - cut_at < 2.0  # not after the 20 s sentence
        time.sleep(1.5)
        assert started.read_text().count("x") == 1  # and the English one never started
    finally:
        speaker.close()


def test_a_fall_cuts_a_test_that_is_still_being_synthesised(tmp_path, monkeypatch):
    """Issue 30, defect 9: a test sentence being synthesised when a real fall came was finished,
    then played, before the fall's warning (first real speech +4.8 s instead of +2.2 s). The
    synthesiser stands in for a slow Nano: espeak-ng itself, after 20 s for the test sentence;
    aplay for the sound device (the hardware edge), recording what it was given."""
    import os
    import stat

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    synth_log, played = tmp_path / "synth.log", tmp_path / "played.log"
    slow = tmp_path / "slow-espeak"
    slow.write_text("#!/bin/sh\n"
                    f"echo \"$*\" >> {synth_log}\n"
                    "case \"$*\" in *ALARMTEST*) sleep 20 >/dev/null 2>&1;; esac\n"
                    "exec espeak-ng \"$@\"\n")
    fake_aplay = tmp_path / "bin" / "aplay"
    fake_aplay.parent.mkdir()
    fake_aplay.write_text(f"#!/bin/sh\necho \"$@\" >> {played}\n")
    for script in (slow, fake_aplay):
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_aplay.parent}{os.pathsep}{os.environ['PATH']}")
    speaker = Speaker(SpeechConfig(command=str(slow), test_text="ALARMTEST one", second_test_text="ALARMTEST two",
                                   repeat_interval_s=60))
    try:
        speaker.say("test")
        assert wait_for(lambda: synth_log.exists() and "ALARMTEST one" in synth_log.read_text(), 10)
        fall_at = time.monotonic()
        speaker.start("cam0/1", "fall_detected")
        assert wait_for(lambda: played.exists() and played.read_text().count("\n") >= 1, 15)
        assert time.monotonic() - fall_at < 5.0  # not after the test's 20 s synthesis
        assert wait_for(lambda: played.read_text().count("\n") >= 2, 15)  # both languages of the fall
        assert "ALARMTEST two" not in synth_log.read_text()  # the rest of the test was dropped
        assert speaker.problem is None  # a cut is not a broken synthesiser
        assert list(speaker.announced) == ["test", "fall_detected"]
    finally:
        speaker.close()


_SANDBOXED_SPEAKER = """
import sys, threading, time
from edge.alarms.controller import LocalAlarm
from edge.alarms.speech import Speaker
from edge.config import SpeechConfig
speaker = Speaker(SpeechConfig(repeat_interval_s=60, test_text="one", second_voice=""))
alarm = LocalAlarm(None, speaker)
speaker.say("fall_detected")
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not (speaker.spoken or speaker.problem):
    time.sleep(0.1)
alive = any(thread.name == "speech" and thread.is_alive() for thread in threading.enumerate())
print(repr((speaker.spoken, alarm.problems().get("speech", ""), alive)))
"""


def test_speech_under_the_units_read_only_tmp_reports_its_problem_and_speaks_with_its_tmpdir(tmp_path):
    """Issue 39, defect 1: ProtectSystem=strict without PrivateTmp leaves /tmp, /var/tmp and the
    working directory read-only. The speech worker died at the first warning (tempfile found no
    usable directory) while health said speech was fine. Reproduced with those paths really
    mounted read-only in a mount namespace: without TMPDIR the speaker says why in health and
    its worker lives; with TMPDIR at a writable directory (the unit's RuntimeDirectory) it speaks.
    The sound device is the hardware edge: a stand-in aplay that keeps the WAV it was given."""
    import os
    import stat
    import subprocess

    if shutil.which("espeak-ng") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs espeak-ng, unshare and root (read-only bind mounts in a mount namespace)")
    workdir, runtime, played = tmp_path / "work", tmp_path / "run", tmp_path / "played"
    for folder in (workdir, runtime, played):
        folder.mkdir()
    fake = tmp_path / "bin" / "aplay"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\ncp "$last" {played}/$$.wav\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    script = tmp_path / "speak.py"
    script.write_text(_SANDBOXED_SPEAKER)
    repo = Path(__file__).resolve().parents[1]

    def run(tmpdir):
        # pytest's tmp_path is under /tmp: the folders the test itself writes are bound back read-write.
        mounts = " && ".join([f"mount --bind {p} {p} && mount -o remount,bind,ro {p}"
                              for p in ("/tmp", "/var/tmp", str(workdir))]
                             + [f"mount --bind {p} {p} && mount -o remount,bind,rw {p}" for p in (runtime, played)])
        env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
        env.update(PATH=f"{fake.parent}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo))
        if tmpdir:
            env["TMPDIR"] = str(tmpdir)
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 f"{mounts} && cd {workdir} && exec {sys.executable} {script}"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        return eval(result.stdout.strip().splitlines()[-1])

    spoken, problem, alive = run(None)
    assert spoken == 0 and "no writable temporary directory" in problem and "TMPDIR" in problem
    assert alive, "the speech worker must outlive a warning it could not speak"
    assert not list(played.iterdir())
    spoken, problem, alive = run(runtime)
    assert spoken >= 1 and problem == "" and alive
    assert wav_seconds_and_rms(next(played.iterdir()))[1] > 500  # a real sentence, not silence
    assert not list(runtime.iterdir())  # the temporary WAVs are gone


def test_the_unit_gives_the_service_a_writable_tmpdir():
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "fall-edge.service").read_text().splitlines()
    assert "RuntimeDirectory=fall-edge" in unit and "RuntimeDirectoryMode=0700" in unit
    assert "Environment=TMPDIR=/run/fall-edge" in unit
