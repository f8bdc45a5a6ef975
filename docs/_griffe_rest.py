"""A griffe extension that lets mkdocstrings render wsbridge's reST-flavoured docstrings.

wsbridge's docstrings follow the standard library's habits: Sphinx roles
(:class:`~wsbridge.Endpoint`), ``.. code-block::`` directives, ``::`` literal blocks,
doctest examples and reST links. mkdocstrings renders docstrings as Markdown, so this
extension rewrites them, once the package is loaded:

* a role whose target is a wsbridge object becomes an optional cross-reference (a link
  when that object is rendered somewhere in the site, plain code otherwise); any other
  role becomes inline code;
* ``.. code-block:: LANG`` and ``::`` literal blocks become fenced code blocks;
* runs of ``>>>`` lines (with their output) become ``pycon`` blocks;
* ```text <url>`_`` becomes a Markdown link.

Only the docs build uses it (``mkdocs.yml``: ``extensions``); the package never imports it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>[a-z]+):`(?P<body>[^`]+)`")
_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>https?://[^>]+)>`__?")
_DIRECTIVE = re.compile(r"^(?P<indent>[ ]*)\.\. code-block::[ ]*(?P<lang>\S*)[ ]*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class RestDocstrings(griffe.Extension):
    """Rewrite reST constructs of every docstring in the package into Markdown."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite every docstring once the whole package is loaded."""
        self._pkg = pkg
        for obj in self._walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj.docstring.value, obj)

    def _walk(self, obj: griffe.Object) -> Any:
        yield obj
        for member in obj.members.values():
            if not member.is_alias:
                yield from self._walk(member)  # type: ignore[arg-type]

    # -- cross-references ------------------------------------------------------------------

    def _lookup(self, path: str) -> griffe.Object | griffe.Alias | None:
        root = self._pkg.path
        if path == root:
            return self._pkg
        if not path.startswith(root + "."):
            return None
        try:
            return self._pkg[path[len(root) + 1 :]]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None

    def _resolve(self, target: str, context: griffe.Object) -> str | None:
        target = target.lstrip(".")
        candidates = [target]
        scope: griffe.Object | None = context
        while scope is not None:
            candidates.append(f"{scope.path}.{target}")
            scope = scope.parent
        candidates.append(f"{self._pkg.path}.{target}")
        for candidate in candidates:
            found = self._lookup(candidate)
            if found is None:
                continue
            if found.is_alias:
                if not found.target_path.startswith(self._pkg.path + "."):
                    continue  # an imported outside name, such as ``re`` in a module
                try:
                    return found.final_target.path  # the canonical path, as rendered
                except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                    continue
            return candidate
        return None

    def _role(self, match: re.Match[str], context: griffe.Object) -> str:
        body = match["body"].strip()
        title, _, explicit = body.partition(" <")
        if explicit:
            target = explicit.rstrip(">").strip()
        else:
            target = title = body
        short = target.startswith("~")
        target = target.lstrip("~")
        if not explicit:
            title = target.rsplit(".", 1)[-1] if short else target
        resolved = self._resolve(target, context)
        code = f"<code>{html.escape(title)}</code>"
        if resolved is None:
            return f"`{title}`"
        return f'<autoref identifier="{resolved}" optional>{code}</autoref>'

    # -- blocks ------------------------------------------------------------------------------

    def _rewrite(self, text: str, context: griffe.Object) -> str:
        lines = text.split("\n")
        out: list[str] = []
        i = 0
        in_fence = False
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                out.append(line)
                i += 1
                continue
            if in_fence:
                out.append(line)
                i += 1
                continue
            directive = _DIRECTIVE.match(line)
            literal = line.rstrip().endswith("::") and not line.strip().startswith("..")
            if directive or literal:
                base = _indent(line)
                lang = (directive["lang"] if directive else "") or ("python" if literal else "text")
                if literal:
                    head = line.rstrip()[:-2].rstrip()
                    if head:
                        out.append(self._inline(head + ":", context))
                j = i + 1
                while j < len(lines) and not lines[j].strip():
                    j += 1
                block: list[str] = []
                while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                    block.append(lines[j])
                    j += 1
                while block and not block[-1].strip():
                    block.pop()
                if not block:
                    out.append(self._inline(line, context))
                    i += 1
                    continue
                strip = min(_indent(b) for b in block if b.strip())
                out.append("")
                out.append(" " * base + f"```{lang}")
                out.extend(" " * base + b[strip:] if b.strip() else "" for b in block)
                out.append(" " * base + "```")
                out.append("")
                i = j
                continue
            if line.lstrip().startswith(">>> "):
                base = _indent(line)
                block = []
                while i < len(lines) and lines[i].strip():
                    block.append(lines[i][base:] if _indent(lines[i]) >= base else lines[i].strip())
                    i += 1
                out.append(" " * base + "```pycon")
                out.extend(" " * base + b for b in block)
                out.append(" " * base + "```")
                continue
            out.append(self._inline(line, context))
            i += 1
        return "\n".join(out)

    def _inline(self, line: str, context: griffe.Object) -> str:
        line = _ROLE.sub(lambda m: self._role(m, context), line)
        return _LINK.sub(lambda m: f"[{m['text'].strip()}]({m['url']})", line)
