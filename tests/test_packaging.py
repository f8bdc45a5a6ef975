"""Release readiness: the sdist and the wheel build, pass ``twine check``, and hold the package.

Builds with ``python -m build`` into a temporary directory (the wheel is built from the
sdist, so a file missing from the sdist fails here too). Skipped when ``build`` (or
``twine``) is not installed, unless the ``CI`` environment variable is set: then it fails,
so CI never passes by skipping.

The release workflow (``.github/workflows/release.yml``) parses, runs the jobs RELEASING.md
describes in that order, and publishes with trusted publishing, no stored token.
"""

from __future__ import annotations

import email
import importlib.util
import itertools
import os
import re
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
        "clients",
    }
    prefix = f"{FILE_PREFIX}-{_version()}/"
    with tarfile.open(sdist) as archive:
        names = [name.removeprefix(prefix) for name in archive.getnames()]
    top_level = {name.split("/", 1)[0] for name in names if name and name != prefix.rstrip("/")}
    assert top_level <= allowed, f"unexpected files in the sdist: {sorted(top_level - allowed)}"
    stray = [name for name in names if "node_modules" in name or "__pycache__" in name]
    assert not stray, f"build debris in the sdist: {stray[:5]}"


# -- the release workflow ------------------------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _workflow() -> dict[str, object]:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(workflow, dict)
    return workflow


def _steps(job: object) -> list[dict[str, object]]:
    assert isinstance(job, dict)
    steps = job["steps"]
    assert isinstance(steps, list)
    return steps


def _commands(job: object) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(job))


def _actions(job: object) -> list[str]:
    return [str(step["uses"]) for step in _steps(job) if "uses" in step]


def test_release_workflow_runs_on_a_version_tag() -> None:
    workflow = _workflow()
    # YAML 1.1 reads the key "on" as the boolean True.
    trigger = workflow.get("on", workflow.get(True))
    assert trigger == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {"contents": "read"}


def test_release_workflow_names_the_jobs_releasing_md_describes() -> None:
    jobs = _workflow()["jobs"]
    assert isinstance(jobs, dict)
    described = re.findall(r"^- \*\*`([\w-]+)`\*\*:", (ROOT / "RELEASING.md").read_text(), re.M)
    assert described == list(jobs), "RELEASING.md and the workflow list different jobs"
    # Each job waits for the one before it: nothing is published untested.
    for before, job in itertools.pairwise(jobs):
        needs = jobs[job]["needs"]
        assert before in ([needs] if isinstance(needs, str) else needs), f"{job} needs {before}"


def test_release_workflow_builds_checks_and_tests_the_wheel() -> None:
    jobs = _workflow()["jobs"]
    assert isinstance(jobs, dict)
    build = _commands(jobs["build"])
    assert "python -m build" in build
    assert "twine check --strict dist/*" in build
    assert '"v${version}"' in build  # the tag must match the single-sourced version
    test = _commands(jobs["test-wheel"])
    assert "python -m venv /tmp/release-venv" in test
    assert '"$(ls dist/*.whl)[test]"' in test
    assert "/tmp/release-venv/bin/python -m pytest" in test
    assert "actions/download-artifact@v4" in _actions(jobs["test-wheel"])


def test_release_workflow_publishes_with_trusted_publishing_and_no_token() -> None:
    jobs = _workflow()["jobs"]
    assert isinstance(jobs, dict)
    publish = jobs["publish-pypi"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    assert "pypa/gh-action-pypi-publish@release/v1" in _actions(publish)
    for step in _steps(publish):
        assert "with" not in step or "password" not in step["with"], step
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "secrets." not in text, "the workflow must not use a stored secret"


def test_release_workflow_publishes_the_documentation_site() -> None:
    jobs = _workflow()["jobs"]
    assert isinstance(jobs, dict)
    docs = jobs["publish-docs"]
    assert docs["permissions"] == {"pages": "write", "id-token": "write"}
    assert "mkdocs build --strict" in _commands(docs)
    assert "-r docs/requirements.txt" in _commands(docs)
    actions = _actions(docs)
    assert "actions/upload-pages-artifact@v3" in actions
    assert "actions/deploy-pages@v4" in actions
    site_url = re.search(r"^site_url: (\S+)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert site_url is not None
    assert site_url.group(1) in (ROOT / "RELEASING.md").read_text(encoding="utf-8")
