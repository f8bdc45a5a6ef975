"""The public surface: what ``wsbridge`` exports, pinned, and documented.

Adding a name to the package root, or removing one, is a decision: this test fails until
the list below is updated with it (and the changelog says so).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import wsbridge

# The package root's public API, as ``from wsbridge import ...`` offers it.
ROOT_EXPORTS = frozenset(
    {
        # the broadcaster and its subscribers
        "Broadcaster",
        "Frame",
        "OverflowPolicy",
        "Stats",
        "Subscriber",
        # channels
        "Channel",
        "glob_match",
        "is_pattern",
        "validate_channel",
        # the framework-free endpoint
        "ConnectionInfo",
        "Endpoint",
        "Handshake",
        "Transport",
        "TransportClosed",
        # channel permissions
        "AllowList",
        # errors
        "AuthenticationError",
        "BrokerClosedError",
        "SubscriptionRefusedError",
        "BrokerError",
        "BrokerUnavailableError",
        "ConfigurationError",
        "EventValidationError",
        "InvalidChannelError",
        "WsbridgeError",
        # schemas
        "DeliveryKind",
        "EventSchema",
        "Registry",
        # channel history
        "History",
        "Position",
        "Resumed",
        # the sans-I/O session
        "Session",
        "SessionLimits",
        # the version
        "__version__",
    }
)


def _modules() -> list[str]:
    names = ["wsbridge"]
    for info in pkgutil.walk_packages(wsbridge.__path__, "wsbridge."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # running it is the point of importing it
        names.append(info.name)
    return names


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional extra (aiohttp, prometheus...) not installed
        pytest.skip(f"{name} needs an optional dependency: {exc}")


def test_root_exports_are_pinned() -> None:
    assert set(wsbridge.__all__) == ROOT_EXPORTS


def test_root_exports_have_no_duplicates() -> None:
    assert len(wsbridge.__all__) == len(set(wsbridge.__all__))


def test_every_root_export_exists() -> None:
    for name in wsbridge.__all__:
        assert hasattr(wsbridge, name), name


def test_star_import_gives_exactly_the_exports() -> None:
    namespace: dict[str, object] = {}
    exec("from wsbridge import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(wsbridge.__all__)


def test_version_is_single_sourced() -> None:
    from wsbridge import _version

    assert wsbridge.__version__ == _version.__version__
    assert isinstance(wsbridge.__version__, str)
    assert wsbridge.__version__


def test_root_exports_come_from_their_modules() -> None:
    # Each class or function is re-exported from the module that defines it, and that
    # module lists it in its own __all__.
    for name in sorted(ROOT_EXPORTS - {"__version__"}):
        obj = getattr(wsbridge, name)
        module = importlib.import_module(obj.__module__)
        assert name in getattr(module, "__all__", ()), f"{obj.__module__}.__all__ lacks {name}"


@pytest.mark.parametrize("module_name", _modules())
def test_module_all_is_consistent(module_name: str) -> None:
    module = _import(module_name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        # Only modules without public names of their own may go without __all__.
        assert module_name in ("wsbridge._version", "wsbridge.testing"), (
            f"{module_name} has no __all__"
        )
        return
    assert len(exported) == len(set(exported)), f"duplicates in {module_name}.__all__"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names a missing {name!r}"


@pytest.mark.parametrize("module_name", _modules())
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = _import(module_name)
    assert inspect.getdoc(module), f"{module_name} has no docstring"
    undocumented: list[str] = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants and type aliases carry their documentation in the module
        if not getattr(obj, "__module__", "").startswith("wsbridge"):
            continue
        if not inspect.getdoc(obj):
            undocumented.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if (inspect.isfunction(value) or isinstance(value, property)) and not (
                    value.__doc__ or ""
                ).strip():
                    undocumented.append(f"{name}.{attr}")
    assert not undocumented, f"{module_name}: no docstring for {', '.join(undocumented)}"
