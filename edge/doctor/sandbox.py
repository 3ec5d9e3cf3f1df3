"""`fall-edge doctor --as-service`: the doctor run inside the service's own sandbox.

The doctor run as the service's user (runuser) but outside its unit cannot see what the unit's
hardening takes away: a read-only /tmp (ProtectSystem=strict), a device outside DeviceAllow=, a
refused system call. Here the unit's [Service] settings (the shipped file and its drop-ins) are
handed to `systemd-run --pipe --wait` as properties of a transient unit that runs the doctor, so
it opens, writes and calls what the service would, and fails where the service would.
"""


import os
from pathlib import Path
from typing import Iterable, List, Tuple

UNIT = Path("/etc/systemd/system/fall-edge.service")
# What makes the service a long-running notify service, not its sandbox: left out of the doctor's.
_NOT_SANDBOX = {"Type", "NotifyAccess", "WatchdogSec", "TimeoutStartSec", "TimeoutStopSec", "ExecStart",
                "ExecStartPre", "ExecStartPost", "ExecStop", "ExecReload", "Restart", "RestartSec",
                "RestartPreventExitStatus", "RemainAfterExit", "StartLimitIntervalSec", "StartLimitBurst"}
_OWN_RUNTIME = "fall-edge-doctor"  # the service's RuntimeDirectory is removed when a unit using it stops


def unit_settings(files: Iterable[Path]) -> List[Tuple[str, str]]:
    """(key, value) of every [Service] line, in order, repeated keys kept (DeviceAllow=, ...)."""
    settings: List[Tuple[str, str]] = []
    for path in files:
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Service" and "=" in line:
                key, value = line.split("=", 1)
                settings.append((key.strip(), value.strip()))
    return settings


def sandbox_properties(settings: Iterable[Tuple[str, str]]) -> List[str]:
    """systemd-run -p arguments for the sandbox part of a unit's settings. The runtime directory is
    the doctor's own (a transient unit that shares the service's would remove it when it ends)."""
    out = []
    for key, value in settings:
        if key in _NOT_SANDBOX:
            continue
        if key == "RuntimeDirectory" and value:
            value = _OWN_RUNTIME
        elif key == "Environment":
            value = value.replace("/run/fall-edge", f"/run/{_OWN_RUNTIME}")
        out.append(f"{key}={value}")
    return out


def unit_files(unit: Path = UNIT) -> List[Path]:
    dropins = sorted((unit.parent / f"{unit.name}.d").glob("*.conf"))
    return [unit, *dropins]


def systemd_run_command(doctor_argv: List[str], unit: Path = UNIT) -> List[str]:
    """The systemd-run command that runs `doctor_argv` inside the unit's sandbox, as its user."""
    properties = sandbox_properties(unit_settings(unit_files(unit)))
    command = ["systemd-run", "--quiet", "--pipe", "--wait", "--collect", "--service-type=exec",
               f"--unit=fall-edge-doctor-{os.getpid()}"]
    for prop in properties:
        command += ["-p", prop]
    return command + ["--", *doctor_argv]

