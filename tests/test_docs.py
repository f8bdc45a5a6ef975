"""The documentation site builds, and the code it shows works against the current code.

* ``mkdocs build --strict`` into a temporary directory: broken links, unknown
  cross-references and missing pages fail. Skipped when mkdocs and its plugins are not
  installed (``pip install -r docs/requirements.txt``), unless ``CI`` is set.
* Every application in ``docs/examples`` (included verbatim in the pages) is served with
  its Redis URL replaced by ``memory://``, and a WebSocket client receives an event
  through it; the other examples run, and their printed output matches the page.
* Every Python block written in README.md or a page runs, or, marked
  ``<!-- fragment: reason -->`` on the line before it, compiles.
* What the pages say about the code is checked against it: the names the API reference
  lists import as it says, every environment variable the command line reads is in the
  configuration reference, the extras the README lists hold what it says, no page
  installs the unrelated ``wsbridge`` distribution, and the project URLs agree.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import runpy
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})

ALERT = {
    "type": "drawdown",
    "severity": "critical",
    "reason": "-5% today",
    "timestamp": "2026-03-12T14:40:00Z",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in _FALSE_VALUES


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def _need(*modules: str) -> None:
    missing = [name for name in modules if not _installed(name)]
    if missing:
        message = f"needs {', '.join(missing)} (pip install -r docs/requirements.txt)"
        if _in_ci():
            pytest.fail(f"{message}; CI is set, so this fails instead of skipping")
        pytest.skip(message)


# -- the site ----------------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    _need("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,  # mkdocs.yml names paths (snippets, the griffe extension) from the root
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    for page in ("index.html", "tutorial/index.html", "protocol/index.html", "glossary/index.html"):
        assert (site / page).is_file(), f"{page} was not built"
    api = (site / "reference" / "api" / "core" / "index.html").read_text(encoding="utf-8")
    assert 'id="wsbridge.broadcaster.Broadcaster"' in api
    # The docstrings' Sphinx roles were turned into links or code, not printed as is.
    leftovers = re.findall(r":(?:class|meth|func|data|attr|mod):`", api)
    assert not leftovers, f"unconverted roles in the API reference: {leftovers[:3]}"


# -- the examples ------------------------------------------------------------------------


def _load(relative: str, **replacements: str) -> types.ModuleType:
    """Execute an example as a module, with its Redis URL replaced by the memory broker."""
    path = EXAMPLES / relative
    source = path.read_text(encoding="utf-8").replace("redis://localhost:6379/0", "memory://")
    for old, new in replacements.items():
        source = source.replace(old, new)
    module = types.ModuleType(f"docs_example_{path.stem}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


@pytest.fixture
def client_class() -> Any:
    _need("starlette", "httpx")
    with warnings.catch_warnings():
        # Recent Starlette warns that it prefers httpx2 over httpx; either works here.
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient


def _round_trip(client_class: Any, module: types.ModuleType, path: str, **connect: Any) -> None:
    """Connect, wait for the pong (subscriptions are in place), publish, receive."""
    broadcaster = module.broadcaster
    with client_class(module.app) as http, http.websocket_connect(path, **connect) as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        http.portal.call(broadcaster.publish, "risk:alert", ALERT)
        assert ws.receive_json() == {"channel": "risk:alert", "data": ALERT, "offset": 1}


ASGI_EXAMPLES = [
    ("quickstart.py", "/ws"),
    ("fastapi_app.py", "/live/ws"),
    ("two_endpoints.py", "/ws/full"),
    ("starlette_app.py", "/ws"),
    ("asgi_app.py", "/ws"),
    ("asgi_dispatch.py", "/ws"),
    ("limits_app.py", "/ws"),
    ("tutorial/app.py", "/ws"),
]


@pytest.mark.parametrize(("example", "path"), ASGI_EXAMPLES)
def test_asgi_example_delivers_events(client_class: Any, example: str, path: str) -> None:
    _need("fastapi")
    _round_trip(client_class, _load(example), path)


def test_tutorial_page_and_publish_route(client_class: Any) -> None:
    _need("fastapi")
    module = _load("tutorial/app.py")
    with client_class(module.app) as http, http.websocket_connect("/ws") as ws:
        assert "new WsbridgeClient" in http.get("/").text
        client = http.get("/wsbridge/index.js")
        assert client.status_code == 200
        assert "export class WsbridgeClient" in client.text
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        bad = {"symbol": "AAPL", "direction": "BUY", "strength": 1.8, "strategy_name": "test"}
        refused = http.post("/publish/signal:generated", json=bad)
        assert refused.status_code == 422
        assert "strength" in refused.json()["detail"]
        update = {"total_equity": 26000, "cash": 6000, "positions_value": 20000}
        assert http.post("/publish/portfolio:update", json=update).status_code == 204
        frame = ws.receive_json()
        assert frame == {"channel": "portfolio:update", "data": update}
        # Step 6: the endpoint allows news:*, and nothing else beyond the registry.
        ws.send_json({"type": "unsubscribe", "channels": ["portfolio:update"], "id": 1})
        ws.send_json({"type": "subscribe", "channels": ["news:*"], "id": 2})
        assert ws.receive_json() == {
            "type": "unsubscribed",
            "channels": ["portfolio:update"],
            "id": 1,
        }
        assert ws.receive_json() == {"type": "subscribed", "channels": ["news:*"], "id": 2}
        ws.send_json({"type": "subscribe", "channels": ["chat:*"], "id": 3})
        assert ws.receive_json()["code"] == "forbidden"
        assert ws.receive_json() == {"type": "subscribed", "channels": [], "id": 3}
        headline = {"headline": "Fed holds rates"}
        assert http.post("/publish/news:markets", json=headline).status_code == 204
        assert ws.receive_json() == {"channel": "news:markets", "data": headline}


def test_fastapi_example_extra_routes(client_class: Any) -> None:
    _need("fastapi")
    module = _load("fastapi_app.py")
    with client_class(module.app) as http:
        assert http.post("/orders/order-456/fill").json() == {"status": "ok"}
        assert http.get("/live/stats").json()["broker_connected"] is True


def test_auth_example(client_class: Any) -> None:
    _need("fastapi")
    from starlette.websockets import WebSocketDisconnect

    module = _load("auth_app.py")
    origin = {"origin": "http://localhost:8000"}
    with client_class(module.app) as http:
        for url, headers in (
            ("/ws", origin),  # no credentials
            ("/ws?token=op-7f3a", {"origin": "https://elsewhere.example"}),  # foreign origin
        ):
            with pytest.raises(WebSocketDisconnect), http.websocket_connect(url, headers=headers):
                pass
        headers = {**origin, "cookie": "session=vw-91c2"}
        with http.websocket_connect("/ws", headers=headers) as viewer:
            request = {"type": "subscribe", "channels": ["trade:*", "risk:*"], "id": 7}
            viewer.send_json(request)
            refused = viewer.receive_json()
            assert refused["code"] == "forbidden"
            assert refused["channel"] == "trade:*"
            assert viewer.receive_json() == {"type": "subscribed", "channels": ["risk:*"], "id": 7}
        with http.websocket_connect("/ws?token=op-7f3a", headers=origin) as operator:
            operator.send_json({"type": "subscribe", "channels": ["trade:*"], "id": 1})
            assert operator.receive_json()["type"] == "subscribed"


def test_token_example(client_class: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _need("fastapi", "jwt")
    import jwt
    from starlette.websockets import WebSocketDisconnect

    secret = "a-test-secret-of-at-least-32-bytes"
    monkeypatch.setenv("WSBRIDGE_JWT_SECRET", secret)
    module = _load("token_app.py")
    token = jwt.encode({"exp": 2**31, "channels": ["risk:*"]}, secret, algorithm="HS256")
    with client_class(module.app) as http:
        with pytest.raises(WebSocketDisconnect), http.websocket_connect("/ws"):
            pass
        subprotocols = ["wsbridge", f"wsbridge.token.{token}"]
        with http.websocket_connect("/ws", subprotocols=subprotocols) as ws:
            assert ws.accepted_subprotocol == "wsbridge"
            ws.send_json({"type": "subscribe", "channels": ["trade:*"], "id": 1})
            assert ws.receive_json()["code"] == "forbidden"
            assert ws.receive_json() == {"type": "subscribed", "channels": [], "id": 1}
            ws.send_json({"type": "ping"})
            assert ws.receive_json() == {"type": "pong"}
            http.portal.call(module.broadcaster.publish, "risk:alert", ALERT)
            assert ws.receive_json() == {"channel": "risk:alert", "data": ALERT, "offset": 1}


@pytest.mark.anyio
async def test_aiohttp_example_delivers_events() -> None:
    _need("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    module = _load("aiohttp_app.py")
    async with TestClient(TestServer(module.create_app())) as http:
        assert (await http.get("/health")).status == 200
        async with http.ws_connect("/ws") as ws:
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json(timeout=5) == {"type": "pong"}
            await module.broadcaster.publish("risk:alert", ALERT)
            event = await ws.receive_json(timeout=5)
            assert event == {"channel": "risk:alert", "data": ALERT, "offset": 1}


def test_custom_schemas_example_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runpy.run_path(str(EXAMPLES / "custom_schemas.py"), run_name="__main__")
    printed = capsys.readouterr().out.strip()
    page = (DOCS / "howto" / "schemas.md").read_text(encoding="utf-8")
    shown = re.search(r"Running it prints:\n\n```text\n(.*?)\n```", page, re.DOTALL)
    assert shown is not None, "the page no longer shows the example's output"
    assert printed == shown.group(1).strip()


def test_typescript_example_generates_declarations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / "typescript" / "generate.py"), run_name="__main__")
    declarations = (tmp_path / "wsbridge-events.ts").read_text(encoding="utf-8")
    assert "export type WSMessage =" in declarations
    assert "export type ServerFrame = WSMessage | ControlFrame;" in declarations
    # The usage example imports only names the generated file exports.
    usage = (EXAMPLES / "typescript" / "dashboard.ts").read_text(encoding="utf-8")
    imported = re.search(r"import type \{([^}]*)\}", usage)
    assert imported is not None
    for name in (part.strip() for part in imported.group(1).split(",")):
        assert re.search(rf"export (?:type|interface) {name}\b", declarations), name


def test_redis_settings_example_builds_its_broadcasters() -> None:
    _need("redis")
    namespace = runpy.run_path(str(EXAMPLES / "redis_settings.py"))
    from wsbridge import Broadcaster

    built = [value for value in namespace.values() if isinstance(value, Broadcaster)]
    assert len(built) == 7
    assert not any(broadcaster.running for broadcaster in built)  # nothing connected


@pytest.mark.slow
def test_testing_example_passes(tmp_path: Path) -> None:
    _need("fastapi", "httpx2", "hypothesis")
    page = (DOCS / "howto" / "testing.md").read_text(encoding="utf-8")
    install = re.search(r"^\$ pip install (.*)$", page, re.MULTILINE)
    assert install is not None, "the how-to no longer shows its install line"
    assert "httpx2" in install.group(1).split(), install.group(0)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLES / "test_dashboard.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            # As a project with filterwarnings = error runs it: the how-to's packages
            # must not warn.
            "-W",
            "error",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout


def test_history_example_resumes_what_was_missed() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "history.py"))
    import anyio

    assert anyio.run(namespace["main"]) == [2, 3]


def test_every_example_is_shown_in_the_docs() -> None:
    pages = "\n".join(path.read_text(encoding="utf-8") for path in DOCS.rglob("*.md"))
    for example in sorted(EXAMPLES.rglob("*")):
        if example.is_file() and example.suffix in {".py", ".ts", ".html", ".conf"}:
            relative = example.relative_to(ROOT).as_posix()
            assert f'--8<-- "{relative}"' in pages, f"{relative} is not included in any page"


def test_examples_hold_no_machine_specific_paths() -> None:
    for example in EXAMPLES.rglob("*"):
        if example.is_file() and "__pycache__" not in example.parts:
            text = example.read_text(encoding="utf-8")
            assert "/home/" not in text, example
            assert "/Users/" not in text, example


# -- what the pages say, checked against the code -----------------------------------------

PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SITE = "https://wsbridge-py.github.io/wsbridge/"
REPOSITORY = "https://github.com/wsbridge-py/wsbridge"
# A Python block that cannot run on its own says so on the line before it, with the reason.
_FRAGMENT = re.compile(r"<!-- fragment: (?P<reason>[^>]*?) -->")
_PYTHON_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```(?:python|py)\b[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.MULTILINE | re.DOTALL,
)


def _python_blocks() -> list[Any]:
    """Every Python block written in a page (not included from a file), as a pytest param."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for found in _PYTHON_BLOCK.finditer(text):
            indent = found.group("indent")
            body = "\n".join(line.removeprefix(indent) for line in found.group("body").split("\n"))
            if body.lstrip().startswith("--8<--"):
                continue  # an included file: the tests above run it
            line = text.count("\n", 0, found.start()) + 1
            before = text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _FRAGMENT.search(before)
            reason = None if marker is None else marker.group("reason").strip()
            where = f"{page.relative_to(ROOT).as_posix()}:{line}"
            blocks.append(pytest.param(where, body, reason, id=where))
    return blocks


@pytest.mark.parametrize(("where", "body", "fragment"), _python_blocks())
def test_every_python_block_runs(where: str, body: str, fragment: str | None) -> None:
    """Blocks run as written (on the memory broker); a fragment is compiled, not run."""
    if fragment is not None:
        assert fragment, f"{where}: a fragment must say why it does not run"
        # Fragments may await at the top level, as they would inside a coroutine.
        compile(body, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    _need(*sorted(_imported_roots(body)))
    source = body.replace("redis://localhost:6379/0", "memory://")
    namespace: dict[str, Any] = {"__name__": "docs_block"}
    exec(compile(source, where, "exec"), namespace)


def _imported_roots(body: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(body)):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module)
    return {name for name in roots if not name.startswith("wsbridge")} | {
        name for name in roots if name in _OPTIONAL_MODULES
    }


# wsbridge modules that need an extra; the test skips (outside CI) when it is missing.
_OPTIONAL_MODULES = frozenset(
    {"wsbridge.fastapi", "wsbridge.starlette", "wsbridge.aiohttp", "wsbridge.client"}
)


def test_the_fragment_marker_is_read() -> None:
    blocks = {param.values[0]: param.values[2] for param in _python_blocks()}
    assert blocks, "no Python block found"
    assert any(reason for reason in blocks.values()), "no fragment found: is the marker read?"
    assert any(reason is None for reason in blocks.values()), "every block is a fragment"


# -- the API reference -------------------------------------------------------------------

API = DOCS / "reference" / "api"


def _resolve(dotted: str) -> object:
    """Import ``a.b.C`` as the API reference names it: a module, or a name in one."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                pytest.skip(f"{module_name} needs {exc.name}")
            continue
        for attribute in parts[split:]:
            assert hasattr(obj, attribute), f"{dotted}: {attribute!r} not found"
            obj = getattr(obj, attribute)
        return obj
    raise AssertionError(f"{dotted} does not import")


def _api_targets(page: Path) -> list[str]:
    """The dotted names a page's ``:::`` blocks document, members lists included."""
    targets: list[str] = []
    current = None
    in_members = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("::: "):
            current = line[4:].strip()
            targets.append(current)
            in_members = False
        elif current and line.strip() == "members:":
            in_members = True
        elif current and in_members and line.strip().startswith("- "):
            targets.append(f"{current}.{line.strip()[2:].strip()}")
        elif not line.startswith(" "):
            current, in_members = None, False
    return targets


@pytest.mark.parametrize("page", sorted(API.glob("*.md")), ids=lambda p: p.name)
def test_every_name_the_api_reference_lists_imports(page: Path) -> None:
    targets = _api_targets(page)
    assert targets, f"{page.name} documents nothing"
    for target in targets:
        _resolve(target)
    # Every "from wsbridge... import ..." the page shows works.
    for statement in re.findall(r"`(from wsbridge[\w.]* import [\w, ]+)`", page.read_text()):
        exec(statement, {})


def test_the_core_reference_names_what_the_package_root_lacks() -> None:
    import wsbridge

    page = API / "core.md"
    text = page.read_text(encoding="utf-8")
    intro = text.split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)`", intro))
    for target in _api_targets(page):
        name = target.rsplit(".", 1)[-1]
        if inspect.ismodule(_resolve(target)):
            continue
        if name not in wsbridge.__all__:
            assert name in named, f"{name} does not import from wsbridge; the page must say so"
        else:
            assert getattr(wsbridge, name) is _resolve(target)


# -- configuration, extras, install lines --------------------------------------------------


def test_every_environment_variable_is_in_the_configuration_reference() -> None:
    _need("click")
    from wsbridge.cli import cli

    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    rows = {
        found.group(1): found.group(0)
        for found in re.finditer(r"^\| `([A-Z][A-Z0-9_]+)` \|.*$", page, re.MULTILINE)
    }
    read = []
    for name, command in cli.commands.items():
        for param in command.params:
            variables = getattr(param, "envvar", None)
            for variable in [variables] if isinstance(variables, str) else variables or []:
                read.append((name, param.opts[-1], variable))
    assert read, "the CLI reads no environment variable?"
    for command_name, option, variable in read:
        assert variable in rows, f"{variable} ({command_name} {option}) is not documented"
        assert f"`{option}`" in rows[variable], f"{variable}: its row does not name {option}"
        assert f"`{command_name}`" in rows[variable], f"{variable}: {command_name} not named"
    # Variables read anywhere else in the package (the demo's) are documented too.
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    for variable in set(re.findall(r"\bWSBRIDGE_[A-Z0-9_]+\b", source)):
        assert variable in rows, f"{variable} is read by the package but not documented"


def _pyproject_extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "wsbridge-py"
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; @]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_every_extra_named_holds_what_the_page_says(page: str) -> None:
    extras = _pyproject_extras()
    text = (ROOT / page).read_text(encoding="utf-8")
    table = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", text, re.MULTILINE)
    assert table, f"{page} has no table of extras"
    shown = dict(table)
    assert set(shown) == set(extras) - {"test", "docs", "dev"}, "the table lists other extras"
    for extra, installs in shown.items():
        if extra == "all":
            continue
        named = {_requirement_name(r) for r in extras[extra]}
        listed = {word.lower() for word in re.findall(r"[\w-]+", installs.split("(")[0])}
        assert named == listed - {"with", "hiredis"}, f"{page}: `{extra}` holds {named}"
    # "every extra above except ...": exactly the extras that `all` pulls in.
    excluded = set(re.findall(r"`(\w+)`", shown["all"].split("except", 1)[-1]))
    [self_reference] = extras["all"]
    held = set(re.search(r"\[(.*)\]", self_reference).group(1).split(","))  # type: ignore[union-attr]
    assert held == set(shown) - {"all"} - excluded, f"`all` holds {sorted(held)}"


def test_no_page_installs_the_unrelated_wsbridge_distribution() -> None:
    files = [*PAGES, *(ROOT / "src").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    for path in [*files, ROOT / "RELEASING.md", ROOT / "SECURITY.md", ROOT / "CHANGELOG.md"]:
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"pip install ([^\n`&|;]*)", text):
            for argument in found.group(1).split():
                name = re.split(r"[\[<>=!~@]", argument.strip("\"'"), maxsplit=1)[0]
                assert name.lower() != "wsbridge", f"{path.relative_to(ROOT)}: {found.group(0)}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f'pip install "wsbridge-py[all] @ git+{REPOSITORY}"' in readme


def test_project_urls_and_documentation_links_agree() -> None:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    assert urls["Documentation"] == SITE
    assert urls["Homepage"] == REPOSITORY
    assert all(url.startswith((REPOSITORY, SITE)) for url in urls.values()), urls
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert f"site_url: {SITE}\n" in mkdocs
    assert f"repo_url: {REPOSITORY}\n" in mkdocs
    # The README sends readers to the built site; each link names a page that exists.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(rf"\]\({re.escape(SITE)}([^)#]*)\)", readme)
    assert len(links) > 20, links
    for link in links:
        stem = link.rstrip("/")
        assert (DOCS / f"{stem}.md").is_file() or (DOCS / stem / "index.md").is_file(), link
