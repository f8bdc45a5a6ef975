"""The documentation site builds, and the code it shows works against the current code.

* ``mkdocs build --strict`` into a temporary directory: broken links, unknown
  cross-references and missing pages fail. Skipped when mkdocs and its plugins are not
  installed (``pip install -r docs/requirements.txt``), unless ``CI`` is set.
* Every application in ``docs/examples`` (included verbatim in the pages) is served with
  its Redis URL replaced by ``memory://``, and a WebSocket client receives an event
  through it; the other examples run, and their printed output matches the page.
"""

from __future__ import annotations

import importlib.util
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
        assert ws.receive_json() == {"channel": "risk:alert", "data": ALERT}


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
        assert "new WebSocket" in http.get("/").text
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
            assert ws.receive_json() == {"channel": "risk:alert", "data": ALERT}


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
            assert await ws.receive_json(timeout=5) == {"channel": "risk:alert", "data": ALERT}


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
    _need("fastapi", "httpx", "hypothesis")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLES / "test_dashboard.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore:Using `httpx`:UserWarning",
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
