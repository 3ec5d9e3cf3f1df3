"""`fall-edge doctor`: one row per thing an installer needs working on site (platform, models,
cameras, broker, buzzer, sound, disk, service), each ok / warning / fail with the fix.

Each check is a small function returning its rows; none of them raises: a check that breaks
is itself a failed row."""


import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from edge.capture.uri import L4T_RELEASE_FILE, on_jetson
from edge.config import Config
from edge.errors import FallEdgeError
from edge.support import cpu_python_problem

OK, WARNING, FAIL = "ok", "warning", "fail"
NOT_HERE = "not on this machine"
_FIRST_FRAME_S = 15.0
_RATE_S = 3.0  # a live camera's frame rate is measured over this long
_CLAIM_WAIT_S = 1.5  # how long the doctor listens for devices running under this name
_BROKER_S = 10.0
_MIN_FREE_BYTES = 200 * 1024 * 1024


@dataclass
class Row:
    what: str
    status: str
    detail: str
    fix: str = ""


# L4T major release -> JetPack (what scripts/install.sh and the README's table speak of).
_JETPACK_OF_L4T = {"R32": "JetPack 4.6", "R35": "JetPack 5", "R36": "JetPack 6"}


def _jetpack() -> Optional[str]:
    """A Jetson's release ("L4T R35 (release), REVISION: 4.1 = JetPack 5"), None elsewhere."""
    try:
        first = L4T_RELEASE_FILE.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    release = ", ".join(first.lstrip("# ").split(", ")[:2])
    jetpack = _JETPACK_OF_L4T.get(release.split(" ")[0], "an unknown JetPack")
    return f"L4T {release} = {jetpack}"


@functools.lru_cache(maxsize=None)
def _tensorrt_version() -> Optional[str]:
    """JetPack's TensorRT bindings' version, None where they do not import (asked once)."""
    try:
        import tensorrt  # JetPack's python3-libnvinfer
    except ImportError:
        return None
    return str(tensorrt.__version__)


@functools.lru_cache(maxsize=None)
def _gpu() -> Tuple[Optional[Tuple[str, str]], str]:
    """(GPU name and compute capability, or None; why not) through pycuda or cuda-python, as the
    TensorRT backend does. Asked once: the platform row and the engine rows both need it."""
    from edge.backends.cuda_memory import cuda_memory

    try:
        return cuda_memory().device(), ""
    except FallEdgeError as exc:
        return None, str(exc)


def problem_row(what: str, problem: str) -> Row:
    """A failed row from a "what is wrong: how to fix it" line (the form the checks' helpers return)."""
    detail, _, fix = problem.partition(": ")
    return Row(what, FAIL, detail, fix)


def _tensorrt_sections(config: Config) -> List[tuple]:
    sections = [("pose", config.pose)] + ([("detector", config.detector)] if config.detector.enabled else [])
    return [(name, section) for name, section in sections if section.type == "tensorrt"]


def check_platform(config: Config) -> List[Row]:
    python = f"{platform.python_version()} ({sys.executable})"
    cpu_sections = [s for s in (config.pose, config.detector) if s.type in ("litert", "onnxruntime")]
    problem = cpu_python_problem() if cpu_sections else None
    if problem:
        reason = problem_row("python", problem)
        rows = [Row("python", FAIL, f"{python}: {reason.detail}", reason.fix)]
    else:
        rows = [Row("python", OK, python)]
    release = _jetpack()
    rows.append(Row("jetson", OK if release else WARNING, release or NOT_HERE,
                    "" if release else "the TensorRT backends need a Jetson; the CPU backends run anywhere"))
    wants_trt = bool(_tensorrt_sections(config))
    version = _tensorrt_version()
    if version is not None:
        rows.append(Row("tensorrt", OK, version))
    else:
        rows.append(Row("tensorrt", FAIL if wants_trt else OK, NOT_HERE if not wants_trt else "not importable",
                        "apt-get install python3-libnvinfer; use a --system-site-packages venv" if wants_trt else ""))
    rows.append(_gpu_row(wants_trt))
    return rows


def _gpu_row(wanted: bool) -> Row:
    """The GPU as CUDA sees it (through pycuda or cuda-python, as the TensorRT backend does)."""
    if not wanted:
        return Row("gpu", OK, f"{NOT_HERE} (the CPU backends need none)")
    device, why = _gpu()
    if device is None:
        # The message says what to install; once installed, a start failure is mostly permissions.
        fix = "" if "pip install" in why else "the user needs the video group for /dev/nvhost-* and /dev/nvmap"
        return Row("gpu", FAIL, why, fix)
    return Row("gpu", OK, f"{device[0]} (sm {device[1]})")


def check_engines(config: Config) -> List[Row]:
    """Each TensorRT engine: there, built by build-engines, for this TensorRT and GPU. Reads the
    sidecars only: the doctor never builds an engine (the service does, at its first start)."""
    from edge.backends.sidecar import check_engine_fits, describe_engine, read_sidecar
    from edge.daemon.runner import resolve_model_path
    from edge.export.sources import build_source_problem

    sections = _tensorrt_sections(config)
    if not sections:
        return [Row("engines", OK, f"{NOT_HERE}: the CPU backends need none")]
    version = _tensorrt_version()
    device = _gpu()[0] if version is not None else None  # the gpu row says why when None
    rows = []
    for name, section in sections:
        path = resolve_model_path(section.model)
        build = (f"fall-edge build-engines --source {section.build.source or '<weights>'} "
                 f"--precision {section.build.precision} --out {path}")
        if not path.is_file():
            problem = build_source_problem(resolve_model_path(section.build.source)) if section.build.source else None
            if problem:
                rows.append(Row(f"engine {name}", FAIL, f"{path} not built, and cannot be at the start: {problem}"))
            elif section.build.source:
                rows.append(Row(f"engine {name}", WARNING, f"{path} not built yet",
                                f"the service builds it from {section.build.source} at its first start (minutes), "
                                f"or now: {build}"))
            else:
                rows.append(Row(f"engine {name}", FAIL, f"{path} not found", f"build it on this device: {build}"))
            continue
        try:
            info = read_sidecar(path)
            if version is None or device is None:
                rows.append(Row(f"engine {name}", WARNING, describe_engine(info),
                                "cannot check it against this device: no TensorRT or GPU (rows above)"))
                continue
            check_engine_fits(info, path, version, device[0], device[1])
        except FallEdgeError as exc:
            rows.append(Row(f"engine {name}", FAIL, str(exc)))
            continue
        rows.append(Row(f"engine {name}", OK, describe_engine(info)))
    return rows


def check_models(config: Config) -> List[Row]:
    from edge.daemon.runner import load_models, resolve_model_path

    missing = [name for name, section in _tensorrt_sections(config) if not resolve_model_path(section.model).is_file()]
    if missing:  # loading would build them here, minutes, racing the service's own build
        engines = " and ".join(missing) + (" engines are" if len(missing) > 1 else " engine is")
        return [Row("models", WARNING, f"not loaded: the {engines} not built yet (above)")]
    started = time.monotonic()
    try:
        models = load_models(config)
    except FallEdgeError as exc:
        return [Row("models", FAIL, str(exc), "fall-edge fetch-models, or build the engines")]
    names = f"pose {config.pose.type} {config.pose.model}"
    if models.detector is not None:
        names += f", detector {config.detector.type} {config.detector.model}"
    if models.sequence is not None:
        names += f", sequence cue {config.sequence.type} {config.sequence.model}"
    rows = [Row("models", OK, f"{names} (loaded in {time.monotonic() - started:.1f} s)")]
    if models.sequence_problem:
        rows.append(Row("sequence cue", WARNING, f"off: {models.sequence_problem}",
                        "pip install onnxruntime in the venv (Python 3.8+), or restore models/fall_sequence.onnx"))
    return rows


def _first_frames(source, seconds: float) -> List[object]:
    """The frames that come within _FIRST_FRAME_S for the first, then `seconds` more (0: the first
    only)."""
    frames: List[object] = []
    first = threading.Event()

    def take() -> None:
        ends = None
        for frame in source.frames():
            frames.append(frame)
            first.set()
            ends = ends or time.monotonic() + seconds
            if time.monotonic() >= ends:
                return

    worker = threading.Thread(target=take, daemon=True)
    worker.start()
    if first.wait(_FIRST_FRAME_S):
        worker.join(seconds + 1.0)
    return list(frames)


def measured_fps(times_s: List[float]) -> Optional[float]:
    """Frames a second over their stream times (None for fewer than 3 frames)."""
    if len(times_s) < 3 or times_s[-1] <= times_s[0]:
        return None
    return (len(times_s) - 1) / (times_s[-1] - times_s[0])


def check_cameras(config: Config, cameras: List[tuple]) -> List[Row]:
    from edge.capture import open_source

    rows = []
    if not cameras:
        return [Row("cameras", FAIL, "none configured", "list them under cameras: in the config, or pass --source")]
    for name, text in cameras:
        if str(text).strip().startswith("csi://") and on_jetson():
            problem = argus_problem()
            if problem:
                rows.append(problem_row(f"camera {name}", problem))
                continue
        try:
            with open_source(text, config.capture, name=name) as source:
                live = bool(getattr(source, "is_live", False))
                # A live camera's rate is measured (capture.fps only asks for one: a 10 fps stream was
                # reported at the asked 15); a file's is the one it declares.
                frames = _first_frames(source, _RATE_S if live else 0.0)
                if not frames:
                    rows.append(Row(f"camera {name}", FAIL, f"no frame within {_FIRST_FRAME_S:.0f} s",
                                    "check the cable or address, and its log lines above"))
                    continue
                height, width = frames[0].image.shape[:2]
                rate = measured_fps([frame.time_s for frame in frames]) if live else None
                if rate is None:
                    shown = f"{width}x{height} at {getattr(source, 'fps', 0):.0f} fps"
                else:
                    shown = f"{width}x{height} at {rate:.1f} fps (measured over {_RATE_S:.0f} s)"
                rows.append(Row(f"camera {name}", OK, shown))
        except FallEdgeError as exc:
            rows.append(Row(f"camera {name}", FAIL, str(exc), "fix the source in the config"))
    return rows


def check_broker(config: Config) -> List[Row]:
    if not config.mqtt.enabled:
        return [Row("broker", OK, "MQTT off (mqtt.enabled: false)")]
    from edge.mqtt.connection import describe_refusal, make_client, set_callbacks, watch_connect_errors

    result = {"error": None}
    done = threading.Event()

    def failed(reason: str) -> None:
        result["error"] = reason
        done.set()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            failed(describe_refusal(reason_code))
        else:
            done.set()

    where = f"{config.mqtt.host}:{config.mqtt.port}"
    try:
        client = make_client(config.mqtt, f"fall-edge-doctor-{int(time.time())}")
    except FallEdgeError as exc:
        return [Row("broker", FAIL, str(exc), "fix the mqtt section")]
    from edge.mqtt import topics
    from edge.mqtt.connection import device_name
    from edge.mqtt.publisher import boot_id

    claims: List[dict] = []
    instance_topic = topics.instance_topic(config.mqtt.prefix, device_name(config.mqtt))

    def on_message(client, userdata, message) -> None:
        try:
            claim = json.loads(message.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        if isinstance(claim, dict) and "instance" in claim:
            claims.append(claim)

    set_callbacks(client, on_connect=on_connect, on_message=on_message)
    watch_connect_errors(client, failed, config.mqtt)
    client.connect_async(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive_s)
    client.loop_start()
    try:
        answered = done.wait(_BROKER_S)
        if answered and not result["error"]:
            # Who runs under this device's name now: running devices answer the question at once.
            client.subscribe(instance_topic, qos=1)
            time.sleep(0.5)
            client.publish(instance_topic, b'{"query": true}', qos=1)
            time.sleep(_CLAIM_WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    if not answered:
        return [Row("broker", FAIL, f"no answer from {where} in {_BROKER_S:.0f} s", "check mqtt.host and the network")]
    if result["error"]:
        return [Row("broker", FAIL, result["error"])]
    tls = "TLS" if config.mqtt.ca_file else "no TLS"
    login = f"as {config.mqtt.username}" if config.mqtt.username else "anonymous"
    rows = [Row("broker", OK, f"{where} accepted the connection ({tls}, {login})")]
    here = boot_id()
    others = {str(c.get("instance")): c for c in claims if str(c.get("boot", "")) != here or not here}
    name = device_name(config.mqtt)
    if others:
        hosts = ", ".join(sorted({str(c.get("host", "?"))[:100] for c in others.values()}))
        rows.append(Row("device name", FAIL, f"another device runs as '{name}' on this broker (host {hosts})",
                        "give each device its own mqtt.device (a cloned SD card keeps the name)"))
    else:
        rows.append(Row("device name", OK, f"'{name}': no other device runs under it"))
    return rows


def check_buzzer(config: Config) -> List[Row]:
    if not config.buzzer.enabled:
        return [Row("buzzer", OK, "off (buzzer.enabled: false)")]
    from edge.alarms.buzzer import ResilientBuzzer

    buzzer = ResilientBuzzer(config.buzzer)
    try:
        if buzzer.error:
            jetson = on_jetson()
            return [Row("buzzer", FAIL if jetson else WARNING, buzzer.error if jetson else f"{NOT_HERE}: "
                        f"{buzzer.error}", "add the user to the gpio group, check buzzer.pin")]
        return [Row("buzzer", OK, f"GPIO pin {config.buzzer.pin} opened ({config.buzzer.pin_factory} factory)")]
    finally:
        buzzer.close()


def _silence(path: Path) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(b"\0\0" * 3200)  # 0.2 s


def check_sound(config: Config, folder: Path) -> List[Row]:
    if not config.speech.enabled:
        return [Row("sound", OK, "speech off (speech.enabled: false)")]
    from edge.alarms.speech import aplay_command

    rows = []
    if shutil.which(config.speech.command) is None:
        rows.append(Row("speech engine", FAIL, f"{config.speech.command} not found", "apt-get install espeak-ng"))
    else:
        rows.append(Row("speech engine", OK, config.speech.command))
    if shutil.which("aplay") is None:
        return rows + [Row("sound device", FAIL, "aplay not found", "apt-get install alsa-utils")]
    wav = folder / "doctor-silence.wav"
    _silence(wav)
    played = subprocess.run(aplay_command(config.speech, wav), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=30)
    wav.unlink()
    if played.returncode != 0:
        reason = (played.stderr.strip().splitlines() or ["no output"])[-1]
        return rows + [Row("sound device", FAIL, reason, "set speech.alsa_device (aplay -L lists them); "
                           "add the user to the audio group")]
    return rows + [Row("sound device", OK, f"played on {config.speech.alsa_device or 'the default device'}")]


def _writable(folder: Path) -> Optional[str]:
    """None when a file can be made in folder (made if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fall-edge-doctor-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_storage(config: Config) -> List[Row]:
    """The folders the service writes: temporary files (speech, the clip encoder), the outbox,
    snapshots and clips. Run inside the unit's sandbox (doctor --as-service) this finds what
    ProtectSystem=strict leaves read-only."""
    import tempfile

    rows = []
    try:
        scratch: Optional[str] = tempfile.gettempdir()
        problem = _writable(Path(scratch))
    except OSError as exc:  # tempfile found no usable directory at all
        scratch, problem = None, exc.strerror or str(exc)
    rows.append(Row("temporary files", FAIL if problem else OK, f"{scratch or 'none'}" + (f": {problem}" if problem
                                                                                        else " writable"),
                    "set TMPDIR to a writable folder (the unit's RuntimeDirectory: TMPDIR=/run/fall-edge)"
                    if problem else ""))
    folders = [("clips", Path(config.clip.dir))] if config.clip.enabled else []
    if config.mqtt.enabled:
        folders = [("outbox", Path(config.mqtt.outbox_path).expanduser().parent),
                   ("snapshots", Path(config.mqtt.snapshot_dir).expanduser())] + folders
    for what, folder in folders:
        problem = _writable(folder.resolve())
        rows.append(Row(f"{what} folder", FAIL if problem else OK,
                        f"{folder.resolve()}" + (f": {problem}" if problem else " writable"),
                        "point it under /var/lib/fall-edge (the service may write only there)" if problem else ""))
    return rows


def check_disk(config: Config) -> List[Row]:
    rows = check_storage(config)
    if not config.mqtt.enabled:
        return rows
    folder = Path(config.mqtt.outbox_path).expanduser().resolve().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    status = OK if free >= _MIN_FREE_BYTES else WARNING
    return rows + [Row("outbox disk", status, f"{free / 2 ** 30:.1f} GB free at {existing}",
                       "" if status == OK else "free some space: events wait in memory when the disk is full")]


ARGUS_SOCKET = Path("/tmp/argus_socket")  # nvargus-daemon's: every CSI camera goes through it


def sandbox_problems(unit: Dict[str, str], csi_cameras: bool, jetson_buzzer: bool) -> List[str]:
    """What in the unit's effective settings (systemctl show) keeps the service from what this
    config needs, each with the fix. Before systemd 253, ProtectClock= and ProtectKernelLogs= imply
    DeviceAllow= lines that close every other device unless a device list is given as well."""
    problems = []
    if csi_cameras and unit.get("PrivateTmp") == "yes":
        problems.append(f"PrivateTmp=yes hides {ARGUS_SOCKET} from the service (CSI cameras): remove it")
    if jetson_buzzer and unit.get("ProtectKernelTunables") == "yes":
        problems.append("ProtectKernelTunables=yes makes /sys read-only, where Jetson.GPIO drives the buzzer's pin: "
                        "remove it")
    closes = [name for name in ("ProtectClock", "ProtectKernelLogs") if unit.get(name) == "yes"]
    if closes and unit.get("DevicePolicy", "auto") == "auto":
        problems.append(f"{' and '.join(closes)}=yes without the DeviceAllow= list closes the cameras, GPU and GPIO "
                        f"on this systemd: rerun scripts/install.sh (it writes both) or remove them")
    return problems


def _unit_settings() -> Dict[str, str]:
    names = "PrivateTmp,ProtectKernelTunables,ProtectClock,ProtectKernelLogs,DevicePolicy"
    shown = subprocess.run(["systemctl", "show", "-p", names, "fall-edge.service"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=10)
    return dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)


def check_service(config: Optional[Config] = None) -> List[Row]:
    if shutil.which("systemctl") is None or not Path("/run/systemd/system").is_dir():
        return [Row("service", WARNING, f"{NOT_HERE}: systemd is not running", "on the Jetson: scripts/install.sh")]
    state = subprocess.run(["systemctl", "is-active", "fall-edge.service"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=10)
    active = (state.stdout.strip() or state.stderr.strip() or "unknown").splitlines()[0]
    rows = [Row("service", OK if active == "active" else WARNING, f"fall-edge.service {active}",
                "" if active == "active" else "sudo systemctl enable --now fall-edge (scripts/install.sh does it)")]
    if config is not None:
        csi = any(camera.source.strip().startswith("csi://") for camera in config.cameras)
        jetson_buzzer = config.buzzer.enabled and config.buzzer.pin_factory == "jetson"
        for problem in sandbox_problems(_unit_settings(), csi, jetson_buzzer):
            rows.append(problem_row("service sandbox", problem))
    return rows


def argus_problem(socket_path: Path = ARGUS_SOCKET) -> Optional[str]:
    """None when nvargus-daemon answers on its socket, else why not with the fix."""
    import socket

    if not socket_path.exists():
        return (f"{socket_path} is missing: nvargus-daemon is not running (sudo systemctl restart nvargus-daemon), "
                f"or /tmp is private to this process")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(socket_path))
    except OSError as exc:
        return f"{socket_path} does not answer ({exc.strerror or exc}): sudo systemctl restart nvargus-daemon"
    finally:
        probe.close()
    return None


def run_checks(config: Config, cameras: List[tuple], folder: Path,
               progress: Optional[Callable[[str], None]] = None, only: Sequence[str] = ()) -> List[Row]:
    """Every check in order, or those named in `only` (CHECK_NAMES)."""
    steps = [("platform", lambda: check_platform(config)), ("engines", lambda: check_engines(config)),
             ("models", lambda: check_models(config)),
             ("cameras", lambda: check_cameras(config, cameras)), ("broker", lambda: check_broker(config)),
             ("buzzer", lambda: check_buzzer(config)), ("sound", lambda: check_sound(config, folder)),
             ("disk", lambda: check_disk(config)), ("service", lambda: check_service(config))]
    rows: List[Row] = []
    for name, step in steps:
        if only and name not in only:
            continue
        if progress is not None:
            progress(name)
        try:
            rows += step()
        except Exception as exc:  # a check that breaks is a failed row, never a traceback
            rows.append(Row(name, FAIL, f"the check itself failed ({type(exc).__name__}: {exc})"))
    return rows


# What --only may name, in run_checks' order.
CHECK_NAMES = ("platform", "engines", "models", "cameras", "broker", "buzzer", "sound", "disk", "service")


def format_rows(rows: List[Row]) -> str:
    width = max(len(row.what) for row in rows)
    lines = [f"{'check':<{width}}  status   detail"]
    for row in rows:
        lines.append(f"{row.what:<{width}}  {row.status:<7}  {row.detail}" + (f"  -> {row.fix}" if row.fix else ""))
    failed = sum(row.status == FAIL for row in rows)
    warned = sum(row.status == WARNING for row in rows)
    lines.append(f"{len(rows)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines)
