"""Which Pythons fall-edge supports, stated once. scripts/bootstrap.sh runs this file with the
Python it is given, before making a venv, so an unsupported one gets a one-line refusal and not
a pip traceback; the doctor reports the same verdict.

It must parse on any Python a user may have (2.7 included): no f-strings, no annotations.
"""

import sys

# ruff: noqa: UP031 (%-formatting on purpose: this file must parse on Python 2.7 to refuse it)

# The CPU path (the embedded default): the Pythons whose wheels of onnxruntime, LiteRT (tflite-runtime
# on 3.8) and OpenCV exist, each run by tests/test_real_install.py from a fresh clone.
CPU_PYTHONS = ((3, 8), (3, 13))
# The Jetson path: the Python of each JetPack release (install.sh picks it by the release).
JETPACK_PYTHONS = {"4.6": (3, 6), "5": (3, 8), "6": (3, 10)}


def _text(version):
    return "%d.%d" % tuple(version)


def cpu_python_problem(version=None):
    """None when this Python runs the CPU path, else the one-line reason with the fix."""
    version = tuple((version or sys.version_info)[:2])
    low, high = CPU_PYTHONS
    if low <= version <= high:
        return None
    return ("Python %s is not supported for the CPU backend (supported: %s to %s): run with "
            "PYTHON=python3.X scripts/bootstrap.sh naming one of those" % (_text(version), _text(low), _text(high)))


if __name__ == "__main__":
    problem = cpu_python_problem()
    if problem:
        sys.stderr.write("bootstrap: %s\n" % problem)
        sys.exit(2)
