"""Build a paho-mqtt client from the config: TLS, username/password, backoff, last will."""


import logging
import os
import random
import socket
import ssl
from pathlib import Path
from typing import Callable, Optional

import paho.mqtt.client as mqtt

from edge.config import MqttConfig
from edge.errors import ConfigError

logger = logging.getLogger(__name__)


def device_name(config: MqttConfig) -> str:
    return config.device or socket.gethostname().split(".")[0]


CREDENTIAL_NAME = "mqtt.password"  # systemd's LoadCredential= name (see systemd/fall-edge.service)


def read_password(config: MqttConfig) -> Optional[str]:
    """From systemd's credential (LoadCredential=, systemd 247+: the file stays root-only), else
    mqtt.password_file, else the variable named by mqtt.password_env; never from argv."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return (Path(credentials) / CREDENTIAL_NAME).read_text(encoding="utf-8").strip()
    if config.password_file:
        path = Path(config.password_file).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file {path} cannot be read ({exc.strerror}): check the path "
                              f"and its permissions") from None
    if config.password_env:
        return os.environ.get(config.password_env)
    return None


# paho-mqtt 2.x needs Python 3.7; JetPack 4.6 (Python 3.6) gets 1.6, whose callbacks take
# other arguments. The handlers here are written for 2.x's VERSION2 callbacks and set through
# set_callbacks(), which adapts them to 1.6.
PAHO_2 = hasattr(mqtt, "CallbackAPIVersion")


class Paho1ReasonCode:
    """paho 1.6 hands on_connect/on_disconnect a number; 2.x a ReasonCode. The handlers read
    `is_failure` and str() of it, as of 2.x's."""

    def __init__(self, value: int, text: str) -> None:
        self.value, self._text = value, text

    @property
    def is_failure(self) -> bool:
        return self.value != 0

    def __str__(self) -> str:
        return self._text


def set_callbacks(client: mqtt.Client, on_connect: Optional[Callable[..., None]] = None,
                  on_disconnect: Optional[Callable[..., None]] = None, on_publish: Optional[Callable[..., None]] = None,
                  on_message: Optional[Callable[..., None]] = None) -> None:
    """Install handlers written for paho 2.x's VERSION2 signatures, on paho 2.x or 1.6."""
    if PAHO_2:
        for name, handler in (("on_connect", on_connect), ("on_disconnect", on_disconnect),
                              ("on_publish", on_publish), ("on_message", on_message)):
            if handler is not None:
                setattr(client, name, handler)
        return
    if on_connect is not None:
        client.on_connect = lambda c, userdata, flags, rc: on_connect(
            c, userdata, flags, Paho1ReasonCode(rc, mqtt.connack_string(rc)), None)
    if on_disconnect is not None:
        # 1.6 reports a dropped connection as 1 or 7, which describe_disconnect knows.
        client.on_disconnect = lambda c, userdata, rc: on_disconnect(c, userdata, None, Paho1ReasonCode(rc, str(rc)),
                                                                     None)
    if on_publish is not None:
        client.on_publish = lambda c, userdata, mid: on_publish(c, userdata, mid, None, None)
    if on_message is not None:
        client.on_message = on_message  # the same arguments in both


def make_client(config: MqttConfig, client_id: str, will_topic: Optional[str] = None,
                clean_session: bool = True) -> mqtt.Client:
    if PAHO_2:
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean_session, protocol=mqtt.MQTTv311)
    else:
        client = mqtt.Client(client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)
    if config.username:
        client.username_pw_set(config.username, read_password(config))
    if config.ca_file:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(config, key)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"mqtt.{key} {value} not found: point it at the PEM file")
        for rule in MqttConfig.TLS_RULES:  # also built from command-line options, not only from a file
            if not rule.ok(config):
                raise ConfigError(f"'mqtt.{rule.key}' {rule.rule}")
        try:
            client.tls_set(ca_certs=config.ca_file, certfile=config.cert_file or None,
                           keyfile=config.key_file or None, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ConfigError(f"mqtt TLS files cannot be used ({exc}): check ca_file, cert_file, key_file") from None
    if will_topic:
        client.will_set(will_topic, b"offline", qos=1, retain=True)
    # Jitter, per client: after a broker restart a fleet of devices must not reconnect in step.
    # The cap stays at most reconnect_max_s, so stored alarms still arrive soon after the broker.
    max_delay = config.reconnect_max_s * random.uniform(0.75, 1.0)
    client.reconnect_delay_set(min_delay=min(max_delay, config.reconnect_min_s * random.uniform(1.0, 1.5)),
                               max_delay=max_delay)
    return client


def describe_refusal(reason_code: object) -> str:
    """A one-line reason for a refused connection, with the fix."""
    text = str(reason_code)
    lowered = text.lower()
    # 2.x says "Not authorized"; 1.6 says "Connection Refused: not authorised."
    if "not authori" in lowered or "bad user name" in lowered or "password" in lowered:
        return f"broker refused the login ({text}): check mqtt.username and the password file or variable"
    return f"broker refused the connection ({text}): check the broker's settings for this client"


def describe_connect_error(exc: OSError, config: MqttConfig) -> str:
    """Why a connection attempt failed, in words, with the setting to check."""
    where = f"{config.host}:{config.port}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if str(reason).upper() == "CERTIFICATE_VERIFY_FAILED":
            # ssl.SSLCertVerificationError and its verify_message are 3.7+; 3.6 raises SSLError.
            detail = getattr(exc, "verify_message", None) or reason
            return f"TLS certificate of {where} not trusted ({detail}): check mqtt.ca_file"
        if "WRONG_VERSION_NUMBER" in str(reason).upper() or "wrong version" in str(exc):
            return f"TLS handshake with {where} failed ({reason}): the port does not speak TLS; check mqtt.port"
        if "CERTIFICATE" in str(reason).upper():
            return (f"TLS handshake with {where} failed ({reason}): the broker wants a client certificate; "
                    "set mqtt.cert_file and mqtt.key_file")
        return f"TLS handshake with {where} failed ({reason})"
    if isinstance(exc, socket.gaierror):
        return f"unknown host {config.host} ({exc.strerror}): check mqtt.host and DNS"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}: no broker listening there; check mqtt.host and mqtt.port"
    if isinstance(exc, ConnectionResetError) and config.ca_file:
        return f"{where} reset the connection during the TLS handshake: the port does not speak TLS; check mqtt.port"
    if isinstance(exc, ConnectionResetError):
        return f"{where} reset the connection: is it a TLS port? set mqtt.ca_file"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer from {where} (timed out): check the network and the firewall"
    return f"cannot connect to {where} ({exc.strerror or exc})"


def describe_disconnect(reason_code: object, config: MqttConfig, ever_connected: bool) -> str:
    """paho says "Unspecified error" for a dropped connection; say what it means here."""
    text = str(reason_code)
    where = f"{config.host}:{config.port}"
    if text.lower() in ("unspecified error", "1", "7"):
        if not ever_connected and not config.ca_file:
            return (f"{where} closed the connection before accepting it: is it a TLS port? set mqtt.ca_file; "
                    "or the broker wants a client certificate")
        if not ever_connected:
            return f"{where} closed the connection before accepting it: check the TLS files and the broker's log"
        return f"connection to {where} lost (broker stopped, network down, or the broker closed it)"
    return f"disconnected from {where} ({text})"


def watch_connect_errors(client: mqtt.Client, on_error: Callable[[str], None], config: MqttConfig) -> None:
    """paho retries failed connections itself but hands on_connect_fail no reason: wrap its
    reconnect() to catch the error on the way and report it in words."""
    original = client.reconnect

    def reconnect():
        try:
            return original()
        except OSError as exc:
            on_error(describe_connect_error(exc, config))
            raise

    client.reconnect = reconnect  # type: ignore[method-assign]
