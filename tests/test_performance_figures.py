"""Every performance figure the docs quote is backed by a committed raw result.

The raw results of the benchmark runs that docs/performance.md and README.md's
"Performance" paragraph quote are kept in ``benchmarks/data/``, one JSON object per line:

* ``*.run.jsonl``: one line per measured case of ``benchmarks/run.py`` (a target, an N,
  a repeat), as the harness writes to its ``cases.jsonl``;
* ``*.inprocess.jsonl``: one line per process of ``benchmarks/inprocess.py --save``;
* ``*.idle.jsonl``: one line per repeat of ``benchmarks/idle.py`` (its ``cases.jsonl``),
  shaped as a run's cases: the burst as the ``throughput`` mode, the keepalive figures as
  a ``keepalive`` mode;
* ``*.history.jsonl``: one line per case of ``benchmarks/history.py`` (its ``cases.jsonl``),
  shaped as a run's cases: a publish variant with a ``publish`` mode; a resume with
  ``live``, ``replay`` and ``reconnect`` modes; a fan-out case as ``run.py`` writes it.

From them this test derives every figure a page may quote: for each group (a target or
app, an N, a mode) the median, minimum and maximum of each measured quantity (the
per-delivery user and system CPU included), and the ratio of its median to any other
group's median of the same quantity in the same run. A page's figure matches a derived
value if it is that value rounded to the decimals the page writes ("16.3" matches 16.25
to 16.35; "1,217" matches 1216.5 to 1217.5; a ratio "0.93x" matches 0.925 to 0.935).

Which figures are checked: in docs/performance.md, every number in a table that follows
a ``<!-- data: FILE -->`` marker must derive from that file, from the groups its row is
about (the first cell names the target or app: `` `name` `` for it and its baseline,
`` `name` (before) `` for the baseline alone; in a before/after table, a column whose
header ends in "before" or "after" takes that side), and from what its column shows:
under a header with ``x``, ratios of CPU per delivery (of p50 or p99 latency if the
header names it; of ns in-process) to the group the header names; else the quantities
of the header's unit (ms, µs of CPU, user µs, deliveries/s, KB, ns), in the mode the
header names ("bursts", "events/s", "live", "replay", "reconnect"), if it names one;
in a table with an "N" column, from the groups of the row's N. A ratio column whose
header says "x without history" divides by the row's target without ``+history``. In
the page's prose and in README.md's
Performance paragraph, every number followed by a unit (µs, ms, ns, KB, x) must be one
that those tables show, as written.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
PAGE = ROOT / "docs" / "performance.md"

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_FIGURE_WITH_UNIT = re.compile(rf"({_NUMBER})\s?(µs|ms|ns|KB|x)\b")
_MARKER = re.compile(r"<!-- data: (\S+) -->")


def _groups_of_run(path: Path) -> dict[tuple[str, ...], list[float]]:
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    # A publish-cost case of history.py has no connections, hence no memory per one.
    memory_optional = path.name.endswith(".history.jsonl")
    for line in path.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case.get("status") != "ok":
            continue
        key = (case["target"], str(case["n"]))
        if not memory_optional or "mem_per_conn_kb" in case:
            groups[(*key, "mem_per_conn_kb")].append(case["mem_per_conn_kb"])
        for mode, measured in case["modes"].items():
            for name, value in measured.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    groups[(*key, mode, name)].append(float(value))
            delivered = measured.get("delivered") or 0
            for part in ("user", "sys"):
                seconds = measured.get(f"server_{part}_s")
                if delivered and seconds is not None:
                    per = seconds / delivered * 1e6
                    groups[(*key, mode, f"{part}_us_per_delivery")].append(per)
    return groups


def _groups_of_inprocess(path: Path) -> dict[tuple[str, ...], list[float]]:
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        groups[(sample["app"], str(sample["n"]), "ns")].extend(sample["ns"])
    return groups


def _groups(path: Path) -> dict[tuple[str, ...], list[float]]:
    if path.name.endswith((".run.jsonl", ".idle.jsonl", ".history.jsonl")):
        return _groups_of_run(path)
    if path.name.endswith(".inprocess.jsonl"):
        return _groups_of_inprocess(path)
    raise AssertionError(
        f"{path.name}: not a .run.jsonl, .idle.jsonl, .history.jsonl or .inprocess.jsonl file"
    )


# What a column may show, by its header: ratios, or the quantities with its unit.
_COLUMN_QUANTITIES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("Redis µs", lambda q: q == "redis_us_per_publish"),
    ("client CPU µs", lambda q: q == "client_cpu_us_per_publish"),
    ("µs per publish", lambda q: q == "us_per_publish"),
    ("Redis CPU s", lambda q: q == "redis_cpu_s"),
    ("of live rate", lambda q: q == "of_live_rate"),
    ("wall s", lambda q: q == "wall_s"),
    ("ms", lambda q: q.endswith("_ms")),
    ("user µs", lambda q: q == "user_us_per_delivery"),
    ("µs per ping", lambda q: q == "us_per_ping"),
    ("µs", lambda q: q == "cpu_us_per_delivery"),
    ("deliveries/s", lambda q: q == "deliveries_per_s"),
    ("KB", lambda q: q == "mem_per_conn_kb"),
    ("ns", lambda q: q == "ns"),
    ("median", lambda q: q == "ns"),
)


def _column_kind(header: str) -> str:
    """``ratio`` for a column of ratios; else the header's unit; else ``any``."""
    if header.startswith("x ") or " x " in header:
        return "ratio"
    for unit, _ in _COLUMN_QUANTITIES:
        if unit in header:
            return unit
    return "any"


# The group a ratio column divides by, by a word of its header (longest first).
_DENOMINATORS = (
    ("fixed reference", "reference_fixed"),
    ("broadcaster", "broadcaster_starlette"),
    ("ceiling", "websockets_broadcast"),
    ("reference", "reference"),
)


def _side(header: str, owners: set[str]) -> set[str]:
    """A before/after table's column: the baseline's groups, or the others."""
    if "x before" in header:
        return {name for name in owners if "@" not in name}
    if header.endswith("before"):
        return {name for name in owners if name.endswith("@before")} or owners
    if header.endswith("after"):
        return {name for name in owners if "@" not in name} or owners
    return owners


def _ratio_quantity(header: str, path: Path) -> str:
    """What a ratio column divides: latency if its header says so, else CPU (or ns)."""
    if path.name.endswith(".inprocess.jsonl"):
        return "ns"
    if "Redis CPU s" in header:
        return "redis_cpu_s"
    if "Redis" in header:
        return "redis_us_per_publish"
    if "client CPU" in header:
        return "client_cpu_us_per_publish"
    if "publish" in header:
        return "us_per_publish"
    if "deliveries/s" in header:
        return "deliveries_per_s"
    for latency in ("p50", "p99"):
        if latency in header:
            return f"{latency}_ms"
    return "cpu_us_per_delivery"


def _denominator(header: str, owners: set[str]) -> set[str] | None:
    """The groups a ratio column's figures may divide by; ``None``: any group."""
    if header.endswith("x before") or header.startswith("after x"):
        return {f"{name.partition('@')[0]}@before" for name in owners}
    if "x without history" in header:
        return {name.removesuffix("+history") for name in owners}
    for word, group in _DENOMINATORS:
        if word in header:
            return {group}
    return None


def _derived(
    path: Path,
    owners: set[str],
    kind: str = "any",
    over: set[str] | None = None,
    ratio_of: str | None = None,
    mode: str | None = None,
    n: str | None = None,
) -> set[float]:
    """The figures a table row about ``owners`` (targets or apps) may show in a column.

    Each owner group's median, minimum, maximum (and, in-process, fastest) of the
    column's quantities, or for a column of ratios, the ratio of an owner's median (or
    fastest) to any other group's of the same quantity and N.
    """
    groups = _groups(path)
    # In-process tables quote the fastest round; run tables, medians of repeats.
    kinds = ("median", "fastest") if path.name.endswith(".inprocess.jsonl") else ("median",)
    wanted = next((test for unit, test in _COLUMN_QUANTITIES if unit == kind), None)
    values: set[float] = set()
    stats: dict[tuple[str, ...], dict[str, float]] = {}
    if n is not None:
        groups = {key: samples for key, samples in groups.items() if key[1] == n}
    for key, samples in groups.items():
        stats[key] = {"median": statistics.median(samples), "fastest": min(samples)}
        if (
            key[0] in owners
            and kind != "ratio"
            and (wanted is None or wanted(key[-1]))
            and (mode is None or mode in key)
        ):
            values.update((statistics.median(samples), min(samples), max(samples)))
    if kind in ("ratio", "any"):
        values.add(1.0)  # a group against itself
        for key, own in stats.items():
            if key[0] not in owners:
                continue
            for other, theirs in stats.items():
                if (
                    other[1:] == key[1:]
                    and (over is None or other[0] in over)
                    and (ratio_of is None or key[-1] == ratio_of)
                    and (mode is None or mode in key)
                ):
                    for which in kinds:
                        if theirs[which]:
                            values.add(own[which] / theirs[which])
    if kind == "any":
        values.update(float(key[1]) for key in groups)  # N
        values.update(_run_settings(path))
    return values


def _run_settings(path: Path) -> set[float]:
    """Counts a table may state: events per run, the offered rate, duplicates, losses."""
    if not path.name.endswith((".run.jsonl", ".idle.jsonl", ".history.jsonl")):
        return set()
    found: set[float] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        for measured in json.loads(line).get("modes", {}).values():
            for key in ("messages", "offered_rate", "dups", "losses"):
                if key in measured:
                    found.add(float(measured[key]))
    return found


def _owners(first_cell: str, path: Path) -> set[str]:
    """The targets or apps a row is about, from its first cell: `name` or `name` (label)."""
    match = re.match(r"`([^`]+)`(?:\s*\((\w+)\))?", first_cell.strip())
    assert match, f"a data table's row must start with a `target`: {first_cell!r}"
    name, label = match.groups()
    names = {key[0] for key in _groups(path)}
    if label:
        return {f"{name}@{label}"}
    # A row about a target covers its baseline too (a before/after table).
    return {n for n in names if n == name or n.startswith(name + "@")}


def _matches(figure: str, values: set[float]) -> bool:
    decimals = len(figure.partition(".")[2])
    number = float(figure.replace(",", ""))
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(abs(v - number) <= tolerance for v in values)


_RESUME_MODES = ("reconnect", "replay", "live")


def _data_files() -> list[Path]:
    return sorted(DATA.glob("*.jsonl"))


def _prose_figures(text: str) -> list[str]:
    """Numbers with a unit outside code blocks and data tables.

    A table after ``<!-- summary -->`` (the goals) counts as prose: it repeats figures.
    """
    found: list[str] = []
    in_code = in_data = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if _MARKER.search(line):
            in_data = True
        elif "<!-- summary -->" in line or (not line.startswith("|") and line.strip()):
            in_data = False
        if in_code or (in_data and line.startswith("|")):
            continue
        found += [m.group(1) for m in _FIGURE_WITH_UNIT.finditer(line)]
    return found


def _tables(text: str) -> list[tuple[str, list[str]]]:
    """Each table after a data marker: the file it names, and its rows."""
    tables: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        marker = _MARKER.search(line)
        if marker:
            current = (marker.group(1), [])
            tables.append(current)
        elif line.startswith("|") and current is not None:
            current[1].append(line)
        elif current is not None and current[1] and not line.startswith("|"):
            current = None
    return tables


def _readme_performance() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Performance\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no Performance section"
    return match.group(1)


def test_there_are_raw_results() -> None:
    assert _data_files(), "benchmarks/data holds no raw results"
    assert _tables(PAGE.read_text(encoding="utf-8")), "no table of the page names its data"


@pytest.mark.parametrize("path", _data_files(), ids=lambda p: p.name)
def test_raw_results_are_small_json_lines(path: Path) -> None:
    assert path.stat().st_size < 200_000
    for line in path.read_text(encoding="utf-8").splitlines():
        assert isinstance(json.loads(line), dict)


def test_every_table_figure_derives_from_its_data() -> None:
    missing = []
    for name, rows in _tables(PAGE.read_text(encoding="utf-8")):
        path = ROOT / name
        assert path.is_file(), f"{name} (named by docs/performance.md) does not exist"
        headers = [c.strip() for c in rows[0].strip("|").split("|")]
        for row in rows[2:]:  # header and rule first
            cells = [c.strip() for c in row.strip("|").split("|")]
            row_owners = _owners(cells[0], path)
            row_n = cells[headers.index("N")].replace(",", "") if "N" in headers else None
            for header, cell in zip(headers[1:], cells[1:], strict=True):
                owners = _side(header, row_owners)
                kind = _column_kind(header)
                over = _denominator(header, owners) if kind == "ratio" else None
                of = _ratio_quantity(header, path) if kind == "ratio" else None
                mode = "throughput" if "bursts" in header else None
                mode = "rate" if "events/s" in header or "p99" in header else mode
                # history.py's resume phases; "replay ... of live rate" is the replay's
                mode = next((m for m in _RESUME_MODES if re.search(rf"\b{m}\b", header)), mode)
                values = _derived(path, owners, kind, over, of, mode, row_n)
                for figure in re.findall(_NUMBER, cell):
                    if not _matches(figure, values):
                        missing.append(f"{figure} under {header!r} in: {row}")
    assert not missing, "figures without raw results:\n" + "\n".join(missing)


def _table_figures() -> set[str]:
    """Every number shown in the page's checked tables, as written."""
    return {
        figure
        for _, rows in _tables(PAGE.read_text(encoding="utf-8"))
        for row in rows[2:]
        for cell in row.strip("|").split("|")[1:]
        for figure in re.findall(_NUMBER, cell)
    }


@pytest.mark.parametrize("where", ["docs/performance.md", "README.md"])
def test_every_prose_figure_is_shown_in_a_checked_table(where: str) -> None:
    # Prose quotes only what the tables show, so each quoted figure is backed row by row.
    text = _readme_performance() if where == "README.md" else PAGE.read_text(encoding="utf-8")
    shown = _table_figures()
    missing = [f for f in _prose_figures(text) if f not in shown]
    assert not missing, f"{where} quotes figures no table of docs/performance.md shows: {missing}"


def test_the_rounding_rule() -> None:
    assert _matches("16.3", {16.26})
    assert not _matches("16.3", {16.36})
    assert _matches("1,217", {1216.6})
    assert not _matches("0.93", {0.9361})
    page = (
        "a 1.5 µs b 0.93x\n<!-- data: x -->\n\n| 9 µs |\n```\n7 ms\n```\n<!-- summary -->\n| 2 KB |"
    )
    assert _prose_figures(page) == ["1.5", "0.93", "2"]
