"""The distribution: it builds and installs without a network, its core needs nothing but the
standard library, and its sources are Python 3.9."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1]
SOURCES = PYTHON_DIR / "src" / "faultd_client"


def test_sources_are_python_3_9() -> None:
    for path in sorted(SOURCES.rglob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_the_wheel_builds_and_installs_offline(tmp_path: Path) -> None:
    # `pip install ./python` without an index: the build backend is the setuptools already
    # installed (scripts/requirements.txt pins it), and nothing else is needed.
    # From a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = tmp_path / "python"
    shutil.copytree(PYTHON_DIR, source, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation",
                    "--no-deps", "--no-index", "--wheel-dir", str(wheels), str(source)],
                   check=True)
    [wheel] = list(wheels.glob("faultd_client-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "faultd_client/py.typed" in names
    assert "faultd_client/chaos/actions.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "faultd = faultd_client.pytest_plugin" in \
        zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True)
    # A fresh environment without pytest or chaostoolkit: the core imports and works.
    out = subprocess.run([python, "-c", (
        "import sys, faultd_client as f\n"
        "assert 'pytest' not in sys.modules and 'chaoslib' not in sys.modules\n"
        "print(f.partition_fault(f.Target('eth0'), 5).to_wire())")],
        check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "{'target': {'dev': 'eth0'}, 'partition': {}, 'duration': '5s'}"
