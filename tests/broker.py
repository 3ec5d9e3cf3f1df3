"""A real Mosquitto on a free loopback port, with a config each test writes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
import pytest

from edge.mqtt.connection import PAHO_2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    def __init__(self, folder: Path, password: Optional[tuple] = None, tls: Optional[dict] = None,
                 users: Optional[dict] = None, acl_file: Optional[Path] = None) -> None:
        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto not installed (apt-get install mosquitto; .ci/run does this)")
        self.folder = folder
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        # As root, mosquitto would switch to its own user, which cannot read pytest's 0700 folders.
        lines = ["user root"] if os.geteuid() == 0 else []
        lines += [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 "autosave_interval 1", f"log_dest file {folder}/mosquitto.log"]
        logins = dict(users or {})
        if password:
            logins[password[0]] = password[1]
        if logins:
            password_file = folder / "passwords"
            for index, (user, secret) in enumerate(logins.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if index == 0 else []), str(password_file), user,
                                secret], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl_file:
            lines.append(f"acl_file {acl_file}")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> Broker:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent sessions, as a service restart does."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


# tests/test_jetpack46.py runs the MQTT tests again with paho-mqtt 1.6 (JetPack 4.6), which has no
# callback_api_version; the product's own test of which paho this is decides.
PAHO_CLIENT_ARGS = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2} if PAHO_2 else {}


def peer_client(broker: "Broker", name: str, user: Optional[str] = None, password: str = "") -> mqtt.Client:
    """A plain MQTT client on the broker, its network loop running (another device, an operator,
    a forger); `user` logs in."""
    client = mqtt.Client(client_id=f"{name}-{uuid.uuid4().hex[:6]}", **PAHO_CLIENT_ARGS)
    if user is not None:
        client.username_pw_set(user, password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


class Collector:
    """A plain subscriber that records every message."""

    def __init__(self, broker: Broker, topic: str = "#", **tls) -> None:
        self.messages = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(client_id=f"collector-{uuid.uuid4().hex[:6]}", **PAHO_CLIENT_ARGS)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"])
        self.client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)  # 1.6's and 2.x's arguments
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        # Messages published before the broker has the subscription are not kept for it: wait.
        if not subscribed.wait(10):
            raise RuntimeError(f"the collector could not subscribe to {topic} on port {broker.port}")

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))  # 1.6: an int

    def on(self, suffix):
        with self._lock:
            return [(payload, retain) for topic, payload, retain in self.messages if topic.endswith(suffix)]

    def events(self):
        return [json.loads(payload) for payload, _ in self.on("/events")]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition, timeout_s: float = 15.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def make_tls_files(folder: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fall-edge test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.crt")
    return {"ca": str(folder / "ca.crt"), "cert": str(folder / "server.crt"), "key": str(folder / "server.key")}
