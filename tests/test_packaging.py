"""Release readiness: the sdist and the wheel build, pass ``twine check``, and hold the package.

Builds with ``python -m build`` into a temporary directory (the wheel is built from the
sdist, so a file missing from the sdist fails here too). Skipped when ``build`` (or
``twine``) is not installed, unless the ``CI`` environment variable is set: then it fails,
so CI never passes by skipping.
"""

from __future__ import annotations

import email
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "wsbridge"
# The distribution name: "wsbridge" on PyPI is an unrelated project (see the README).
DISTRIBUTION = "wsbridge-py"
# Wheel and sdist file names normalise it (PEP 427, PEP 625).
FILE_PREFIX = "wsbridge_py"
_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})

pytestmark = pytest.mark.slow


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in _FALSE_VALUES


def _need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        message = f"{why} needs {module!r}: pip install {module}"
        if _in_ci():
            pytest.fail(f"{message} (CI is set, so this fails instead of skipping)")
        pytest.skip(message)


def _version() -> str:
    namespace: dict[str, object] = {}
    exec((PACKAGE / "_version.py").read_text(encoding="utf-8"), namespace)
    version = namespace["__version__"]
    assert isinstance(version, str)
    return version


def _run(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the sdist and the wheel once for this module; yield the output directory."""
    _need("build", "building the distributions")
    out = tmp_path_factory.mktemp("dist")
    args = ["-m", "build", "--outdir", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        # The build backend is already here: no need to download it into an isolated env.
        args.append("--no-isolation")
    _run(*args, str(ROOT))
    return out


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    return _one(dist, f"{FILE_PREFIX}-*.whl")


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    return _one(dist, f"{FILE_PREFIX}-*.tar.gz")


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_file_names_carry_the_single_sourced_version(wheel: Path, sdist: Path) -> None:
    version = _version()
    assert wheel.name == f"{FILE_PREFIX}-{version}-py3-none-any.whl"
    assert sdist.name == f"{FILE_PREFIX}-{version}.tar.gz"


def test_twine_check_passes(dist: Path) -> None:
    _need("twine", "checking the distributions")
    files = [str(path) for path in sorted(dist.iterdir())]
    output = _run("-m", "twine", "check", "--strict", *files)
    assert output.count("PASSED") == len(files), output


def test_wheel_contains_every_module(wheel_names: set[str]) -> None:
    modules = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules, "no module found under src/wsbridge"
    missing = sorted(modules - wheel_names)
    assert not missing, f"modules missing from the wheel: {missing}"


def test_wheel_is_typed(wheel_names: set[str]) -> None:
    assert "wsbridge/py.typed" in wheel_names


def test_wheel_contains_the_demo_page(wheel_names: set[str]) -> None:
    assert "wsbridge/demo/static/index.html" in wheel_names
    static = PACKAGE / "demo" / "static"
    shipped = {
        path.relative_to(PACKAGE.parent).as_posix() for path in static.rglob("*") if path.is_file()
    }
    missing = sorted(shipped - wheel_names)
    assert not missing, f"demo files missing from the wheel: {missing}"


def test_wheel_holds_only_the_package(wheel_names: set[str]) -> None:
    top_level = {name.split("/", 1)[0] for name in wheel_names}
    version = _version()
    assert top_level == {"wsbridge", f"{FILE_PREFIX}-{version}.dist-info"}, sorted(top_level)
    assert not [name for name in wheel_names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        info = f"{FILE_PREFIX}-{_version()}.dist-info"
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        names = set(archive.namelist())
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Version"] == _version()
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert f"{info}/licenses/LICENSE" in names
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert metadata.get_all("Project-URL")
    assert metadata["Description-Content-Type"] == "text/markdown"
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"redis", "starlette", "fastapi", "aiohttp", "server", "testing", "all"} <= extras
    assert "wsbridge = wsbridge.cli:main" in entry_points


def test_sdist_contains_the_sources_and_project_files(sdist: Path) -> None:
    prefix = f"{FILE_PREFIX}-{_version()}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(prefix) for name in archive.getnames()}
    for required in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "src/wsbridge/__init__.py",
        "src/wsbridge/py.typed",
        "src/wsbridge/demo/static/index.html",
    ):
        assert required in names, f"{required} missing from the sdist"
    assert any(name.startswith("tests/") for name in names), "the sdist ships no tests"
    assert any(name.startswith("docs/") for name in names), "the sdist ships no docs"


def test_sdist_holds_nothing_else(sdist: Path) -> None:
    # Catches include patterns that match more than meant: a pattern such as "tests" also
    # matches any folder named tests, such as those inside a local virtualenv.
    allowed = {
        "PKG-INFO",
        "pyproject.toml",
        ".gitignore",
        "README.md",
        "CHANGELOG.md",
        "SECURITY.md",
        "RELEASING.md",
        "LICENSE",
        "mkdocs.yml",
        "src",
        "tests",
        "docs",
        "examples",
    }
    prefix = f"{FILE_PREFIX}-{_version()}/"
    with tarfile.open(sdist) as archive:
        names = [name.removeprefix(prefix) for name in archive.getnames()]
    top_level = {name.split("/", 1)[0] for name in names if name and name != prefix.rstrip("/")}
    assert top_level <= allowed, f"unexpected files in the sdist: {sorted(top_level - allowed)}"
    stray = [name for name in names if "node_modules" in name or "__pycache__" in name]
    assert not stray, f"build debris in the sdist: {stray[:5]}"
