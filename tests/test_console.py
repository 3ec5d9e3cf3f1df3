"""The control room in a browser, end to end: a real Mosquitto, a real daemon run on a development
clip with a fall (buzzer on gpiozero's mock pins), `fall-edge console` as its own process, and
Debian's Chromium driven by Selenium through chromium-driver."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from broker import Broker, Collector, free_port, wait_for

from edge.alarms.buzzer import Buzzer
from edge.alarms.controller import LocalAlarm
from edge.config import BuzzerConfig, ClipConfig, Config, MqttConfig
from edge.daemon.app import RunOptions, run_one_camera
from edge.daemon.router import EventRouter
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: scripts/bootstrap.sh --dev")
security = pytest.importorskip("werkzeug.security", reason="flask missing: scripts/bootstrap.sh --dev")

ROOT = Path(__file__).resolve().parents[1]
FALL_CLIP = "gmdcsa24_s1_fall15.mp4"  # falls at about 2.5 s and stays down (MANIFEST.tsv)
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PASSWORD = "correct horse battery"


def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromium-driver not installed (scripts/bootstrap.sh --dev installs them)")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,820",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def start_console(tmp_path: Path, broker: Broker, password: str = PASSWORD) -> tuple:
    """`fall-edge console` as its own process with operator alice, once it has the broker."""
    port = free_port()
    config = tmp_path / "console.yaml"
    config.write_text(json.dumps({"console": {
        "listen": f"127.0.0.1:{port}", "db": str(tmp_path / "console.sqlite"),
        "operators": [{"name": "alice", "password_hash": security.generate_password_hash(password)}]}}))
    process = subprocess.Popen([sys.executable, "-m", "edge", "console", "--config", str(config), "--broker",
                                f"127.0.0.1:{broker.port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return json.loads(urllib.request.urlopen(f"{base}/health", timeout=1).read())["broker_connected"]
        except (OSError, ValueError):
            assert process.poll() is None, process.stderr.read()
            return False

    assert wait_for(up, timeout_s=30), "the console did not come up"
    return process, base


def log_in(driver, base: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()


def test_operator_sees_the_fall_live_and_acknowledges_it_on_the_device(tmp_path, models, clips_dir):
    from gpiozero.pins.mock import MockFactory
    from selenium.webdriver.common.by import By

    broker = Broker(tmp_path).start()
    console, base = start_console(tmp_path, broker)
    driver = browser()
    collector = Collector(broker, "fall/#")
    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=18), pin_factory=factory)
    config = Config()
    config.mqtt = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, device="ward-edge",
                             outbox_path=str(tmp_path / "outbox.sqlite"), snapshot_dir=str(tmp_path / "snaps"),
                             health_interval_s=1.0)
    config.clip = ClipConfig(dir=str(tmp_path / "clips"))
    publisher = MqttPublisher(config.mqtt, Outbox(Path(config.mqtt.outbox_path), 1000))
    publisher.start()
    router = EventRouter(config, publisher=publisher, alarm=LocalAlarm(buzzer, None), print_events=False)
    daemon = threading.Thread(target=run_one_camera, daemon=True, args=(
        config, models, router, "ward1", str(clips_dir / FALL_CLIP), RunOptions(realtime=True, pad_end_s=20)))
    try:
        # Wrong password: the login page again, and nothing about any device.
        log_in(driver, base, "not the password")
        # (the answer is a new page: wait for it; reading at once raced the page load now and then)
        assert wait_for(lambda: driver.find_elements(By.ID, "login-error"), timeout_s=10)
        assert "wrong name or password" in driver.find_element(By.ID, "login-error").text
        assert "ward-edge" not in driver.page_source and "Acknowledge" not in driver.page_source
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/fragment/dashboard", timeout=5)
        assert refused.value.code == 401

        log_in(driver, base, PASSWORD)
        assert publisher.wait_connected(10)
        daemon.start()
        # The device comes online (its retained status) with its camera and a health report.
        assert wait_for(lambda: "online" in _text(driver, "#device-ward-edge .device-status"), timeout_s=20)
        assert wait_for(lambda: "ward1: online" in _text(driver, "#device-ward-edge"), timeout_s=20)

        # The fall: on the page, with its picture, within 2 s of the device sending it.
        assert wait_for(lambda: any(e["type"] == "fall_detected" for e in collector.events()), timeout_s=30)
        sent_at = time.monotonic()
        event_id = next(e["event_id"] for e in collector.events() if e["type"] == "fall_detected")
        alarm = f"#alarm-{event_id}"
        assert wait_for(lambda: driver.execute_script(
            "const img = document.querySelector(arguments[0] + ' img.snapshot');"
            "return !!img && img.complete && img.naturalWidth > 0;", alarm), timeout_s=2.0, interval_s=0.05)
        shown_after_s = time.monotonic() - sent_at
        print(f"the alarm and its picture were on the page {shown_after_s:.2f} s after the device sent it")
        assert shown_after_s < 2.0
        assert buzzer.is_sounding and driver.execute_script("return window.alarmSounding") is not None
        assert wait_for(lambda: driver.execute_script("return window.alarmSounding") is True, timeout_s=3)

        click(driver, f"{alarm} button.ack")
        # The device received it: its acknowledged event names the operator, and the buzzer stops.
        assert wait_for(lambda: any(e["type"] == "acknowledged" and e.get("acknowledges") == event_id
                                    for e in collector.events()), timeout_s=10)
        acknowledged = next(e for e in collector.events() if e["type"] == "acknowledged")
        assert acknowledged["operator"] == "alice"
        assert wait_for(lambda: not buzzer.is_sounding, timeout_s=5) and not factory.pin(18).state
        # ... and the page shows who and when, and the sound stops.
        assert wait_for(lambda: "Acknowledged by alice" in _text(driver, alarm), timeout_s=5)
        assert wait_for(lambda: driver.execute_script("return window.alarmSounding") is False, timeout_s=3)

        # Issue 31: the clip (5 s before the fall, 5 s after) reaches the alarm card and plays there,
        # with the snapshot as its poster, and keeps playing while the page refreshes.
        video = f"{alarm} video.clip"
        assert wait_for(lambda: driver.execute_script(
            "const v = document.querySelector(arguments[0]); return !!v && v.readyState >= 1;", video), timeout_s=30)
        duration = driver.execute_script("return document.querySelector(arguments[0]).duration", video)
        assert 6.0 <= duration <= 11.0, duration
        assert "/snapshot/" in driver.execute_script("return document.querySelector(arguments[0]).poster", video)
        driver.execute_script("const v = document.querySelector(arguments[0]); v.muted = true; v.play();", video)
        assert wait_for(lambda: driver.execute_script(
            "return document.querySelector(arguments[0]).currentTime", video) > 1.0, timeout_s=10)
        clip_payload = json.loads(collector.on("/ward1/clip")[0][0])
        assert clip_payload["clip_of"] == event_id and clip_payload["codec"] in ("h264/mp4", "vp8/webm")

        screenshot = Path(os.environ.get("FALL_EDGE_SCREENSHOT", tmp_path / "console.png"))
        driver.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # The history lists the fall and the acknowledgement, filtered by type.
        driver.get(f"{base}/history?type=acknowledged")
        assert "alice" in _text(driver, "#history") and "fall_detected" not in _text(driver, "#history")
    finally:
        driver.quit()
        if daemon.is_alive():
            daemon.join(timeout=60)
        router.close()
        buzzer.close()
        collector.close()
        console.terminate()
        console.wait(timeout=20)
        broker.stop()


def click(driver, selector: str) -> None:
    """Click as a person would; the live page re-renders while health reports come in, so an
    element found a moment ago may be replaced just before the click: find it again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(10):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{selector} kept being replaced")


def _text(driver, selector: str) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.CSS_SELECTOR, selector).text
    except WebDriverException:
        return ""


@pytest.mark.parametrize("width", [360, 390])
def test_the_alarm_view_is_usable_on_a_phone(tmp_path, width):
    """Issue 41, defect 4: at 390 px the cards overflowed sideways and text was cut off; care-home
    staff carry phones. The real console in Chromium at phone size with a fall (snapshot, long
    names) and the devices table: nothing wider than the screen, the Acknowledge button whole and
    on screen, and it acknowledges. The screenshot is docs/console-phone.png in the README."""
    import cv2
    import numpy as np
    from selenium.webdriver.common.by import By
    from test_mqtt import fall_event

    from edge.mqtt.schema import tag_snapshot

    broker = Broker(tmp_path).start()
    console, base = start_console(tmp_path, broker)
    driver = browser()
    device = Collector(broker, "fall/ward-edge-building-b/#")
    try:
        driver.set_window_size(width, 844)
        # an operator in Seoul: times show in the browser's own zone (issue 41, defect 5)
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Seoul"})
        log_in(driver, base, PASSWORD)
        fell = fall_event("fall_detected", track_id=3, camera="corridor-east-wing-second-floor")
        payload = dict(fell.to_dict(), device="ward-edge-building-b")
        topic = "fall/ward-edge-building-b/corridor-east-wing-second-floor"
        device.client.publish(f"{topic}/events", json.dumps(payload), qos=1)
        picture = np.full((720, 1280, 3), 90, np.uint8)
        jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
        device.client.publish(f"{topic}/snapshot", tag_snapshot(jpeg, fell.event_id), qos=1)
        device.client.publish("fall/ward-edge-building-b/health", json.dumps(
            {"processed_fps": 9.5, "cameras": {"corridor-east-wing-second-floor": {}}}), qos=1)
        button = f"#alarm-{fell.event_id} button.ack"
        assert wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, button), timeout_s=15)
        assert wait_for(lambda: driver.execute_script(
            "const img = document.querySelector(arguments[0]);"
            "return !!img && img.complete && img.naturalWidth > 0;", f"#alarm-{fell.event_id} img.snapshot"),
            timeout_s=10)
        layout = driver.execute_script("""
            const box = document.querySelector(arguments[0]).getBoundingClientRect();
            return {page: document.documentElement.scrollWidth, screen: window.innerWidth,
                    left: box.left, right: box.right, top: box.top, height: box.height};""", button)
        assert layout["page"] <= layout["screen"], layout  # nothing pushes the page sideways
        assert 0 <= layout["left"] and layout["right"] <= layout["screen"] and layout["height"] >= 40, layout
        if width == 390:
            shot = ROOT / "docs" / "console-phone.png"
            driver.save_screenshot(str(tmp_path / "phone.png"))
            if os.environ.get("FALL_EDGE_SCREENSHOT_DOCS"):
                shutil.copy(tmp_path / "phone.png", shot)
        # the fall's time (18:59:59 UTC in the data) in the operator's zone, UTC on hover
        shown = driver.execute_script("const t = document.querySelector(arguments[0] + ' time');"
                                      "return [t.textContent, t.title];", f"#alarm-{fell.event_id}")
        assert "18:59:59" in shown[0] and "GMT+9" in shown[0] and shown[1].endswith("09:59:59 UTC"), shown
        click(driver, button)
        assert wait_for(lambda: "waiting for the device" in _text(driver, f"#alarm-{fell.event_id}"), timeout_s=10)
        # the history links the fall to its picture
        driver.get(f"{base}/history")
        link = driver.find_element(By.CSS_SELECTOR, f"#history a[href='/snapshot/{fell.event_id}.jpg']")
        assert link.text == "picture"
    finally:
        device.close()
        driver.quit()
        console.terminate()
        console.wait(timeout=20)
        broker.stop()
