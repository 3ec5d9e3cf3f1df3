"""The Jetson path runs on Python 3.6: JetPack 4.6, the Jetson Nano's last release, has no newer one.

The modules checked are not listed by hand: they are the import closure of the commands an
install on a Jetson runs (`run`, `doctor`, `fetch-models`, `build-engines`), computed here from
the source, with the backends that configs/jetson.yaml picks by their `type` key (imported
by name at run time, so no import statement names them). The CPU backends, eval and the
control-room monitor may stay 3.8+.
"""

import ast
import inspect
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Set

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JETSON_COMMANDS = ("run", "doctor", "fetch-models", "build-engines")


def _file_of(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")


def _is_module(module: str) -> bool:
    return module.split(".")[0] == "edge" and _file_of(module).is_file()


def _imports(nodes: Iterable[ast.AST], module: str) -> Set[str]:
    """edge modules imported anywhere inside `nodes` (module level and inside functions alike)."""
    package = module if _file_of(module).name == "__init__.py" else module.rpartition(".")[0]
    found: Set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(alias.name for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    anchor = package
                    for _ in range(sub.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in sub.names)  # `from pkg import submodule`
    return {name for name in found if _is_module(name)}


def _handler_functions() -> Dict[str, Set[str]]:
    """CLI module -> the names of its command handlers that are not on the Jetson path."""
    from edge.cli import build_parser

    _, commands = build_parser()
    assert set(JETSON_COMMANDS) <= set(commands), sorted(commands)
    elsewhere: Dict[str, Set[str]] = {}
    for name, parser in commands.items():
        if name not in JETSON_COMMANDS:
            handler = inspect.unwrap(parser.get_default("handler"))
            elsewhere.setdefault(handler.__module__, set()).add(handler.__name__)
    return elsewhere


def jetson_closure() -> List[str]:
    """edge/cli and every area's CLI module are imported whole, except the handlers of other commands."""
    import edge.cli

    skipped = _handler_functions()
    config = yaml.safe_load((ROOT / "configs" / "jetson.yaml").read_text(encoding="utf-8"))
    backends = {f"edge.backends.{section['type']}_backend" for section in config.values()
                if isinstance(section, dict) and "type" in section}
    assert backends == {"edge.backends.tensorrt_backend"}, backends
    cli_modules = ["edge.cli", *(area.__name__ for area in edge.cli.AREAS)]
    seen: Set[str] = set()
    todo = [*cli_modules, *sorted(backends)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        tree = ast.parse(_file_of(module).read_text(encoding="utf-8"))
        nodes = [node for node in tree.body
                 if not (isinstance(node, ast.FunctionDef) and node.name in skipped.get(module, set()))]
        todo += sorted(_imports(nodes, module))
    return sorted(seen)


def test_the_closure_is_the_jetson_path():
    closure = jetson_closure()
    for module in ("edge.backends.tensorrt_backend", "edge.decoding.trt_pose", "edge.capture.gst_readers",
                   "edge.fall.state_machine", "edge.alarms.buzzer", "edge.alarms.jetson_pins", "edge.alarms.speech",
                   "edge.mqtt.publisher", "edge.mqtt.outbox", "edge.doctor.checks", "edge.export.engine",
                   "edge.export.calibration"):
        assert module in closure, module
    for module in ("edge.backends.onnxruntime_backend", "edge.backends.litert_backend", "edge.eval.evaluate",
                   "edge.mqtt.monitor"):
        assert module not in closure, module  # CPU-only and control-room code may stay 3.8+


def test_the_jetson_path_parses_as_python_36():
    for module in jetson_closure():
        source = _file_of(module).read_text(encoding="utf-8")
        ast.parse(source, filename=str(_file_of(module)), feature_version=(3, 6))


def test_vermin_finds_nothing_above_python_36_on_the_jetson_path():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    if vermin is None:
        pytest.fail("vermin is not installed: scripts/bootstrap.sh --dev installs it (the dev extra)")
    files = [str(_file_of(module)) for module in jetson_closure()]
    # dataclasses: the PyPI backport, which setup.py asks for below 3.7. Annotations are
    # evaluated at definition time without `from __future__ import annotations`, so they count.
    result = subprocess.run([vermin, "--target=3.6-", "--violations", "--no-tips", "--backport", "dataclasses",
                             "--eval-annotations", "--no-parse-comments", *files],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"Analyzing {len(files)} files" in result.stdout
