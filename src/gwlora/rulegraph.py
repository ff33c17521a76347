"""The workflow's rules and which feeds which, read from the rule files (the deck's workflow slide), never typed.

A rule feeds another when the other's body names ``rules.<rule>``, or names a
function (of the rule files) whose body names a value the rule's output is.
The rules come in the Snakefile's include order; :func:`stages_run` drops the
ones a config does not run (the download without GWOSC data, the evaluate stage
without shifted test sets).
"""

from __future__ import annotations

import re
from pathlib import Path

from .cli import StageError
from .config import shifted_splits, split_source
from .constants import SPLITS

_RULE = re.compile(r"^rule (\w+):\s*$", re.M)
_DEF = re.compile(r"^def (\w+)\(.*?(?=^\S)", re.M | re.S)
_BARE_OUTPUT = re.compile(r"^\s+output:\s*\n\s+(?:\w+=)?([A-Z_]+),?\s*$", re.M)


def rule_files(snakefile: Path) -> list[Path]:
    """The rule files the Snakefile includes, in order."""
    text = snakefile.read_text()
    files = [snakefile.parent / name for name in re.findall(r'^include: "([^"]+)"', text, re.M)]
    if not files:
        raise StageError(f"{snakefile}: includes no rule files")
    return files


def rule_graph(snakefile: str | Path) -> dict[str, list[str]]:
    """{rule: the rules it feeds}, every rule of the included files but ``all``, in include order."""
    texts = [path.read_text() + "\n" for path in rule_files(Path(snakefile))]
    bodies, functions, produced = {}, {}, {}
    for text in texts:
        functions.update((m.group(1), m.group(0)) for m in _DEF.finditer(text))
        starts = list(_RULE.finditer(text))
        for m, end in zip(starts, [s.start() for s in starts[1:]] + [len(text)]):
            bodies[m.group(1)] = text[m.end():end]
            if out := _BARE_OUTPUT.search(bodies[m.group(1)]):
                produced[out.group(1)] = m.group(1)
    bodies.pop("all", None)
    feeds = {name: [] for name in bodies}
    for name, body in bodies.items():
        named = set(re.findall(r"\brules\.(\w+)", body))
        for function in set(re.findall(r"=(\w+),", body)) & set(functions):
            named |= {produced[value] for value in re.findall(r"\b[A-Z_]+\b", functions[function]) if value in produced}
        for source in sorted(named - {name}, key=list(bodies).index):
            if source not in feeds:
                raise StageError(f"rule {name} reads rules.{source}, which no included rule file defines")
            feeds[source].append(name)
    return feeds


def stages_run(graph: dict[str, list[str]], config: dict) -> dict[str, list[str]]:
    """`graph` without the rules `config` does not run: download without GWOSC data, evaluate without shifted test sets, the lr search's rules without lr_search.extend."""
    gwosc = any(split_source(config, split)[0]["source"] == "gwosc" for split in [*SPLITS, *shifted_splits(config)])
    tests, extend = bool(config["evaluation"]["test_sets"]), config["train"].get("lr_search", {}).get("extend", False)
    skipped = {rule for rule, runs in (("download", gwosc), ("evaluate", tests), ("evaluate_extension", tests and extend),
                                       ("lr_search", extend)) if not runs}
    return {rule: [c for c in feeds if c not in skipped] for rule, feeds in graph.items() if rule not in skipped}


def diagram(graph: dict[str, list[str]]) -> str:
    """The graph as text: one line per rule, the rules it feeds after an arrow."""
    width = max(map(len, graph))
    return "\n".join(f"{rule:<{width}} ──▶ {', '.join(feeds)}" if feeds else rule for rule, feeds in graph.items())


_FAILED = re.compile(r"^Error in rule (\w+):\n(?:.*\n)*?\s+log: (\S+) \(check log", re.M)


def failures(snakemake_log: str, root: Path = Path(".")) -> list[str]:
    """One line per failed job of a Snakemake log: its rule, its stage's error (the last line of the traceback in its log) and
    that log's path. The Snakefile prints them last, so that two clear errors are not lost above long JSON command lines."""
    lines = []
    for rule, path in dict.fromkeys(_FAILED.findall(snakemake_log)):
        stage_log = root / path
        text = stage_log.read_text(errors="replace").strip().splitlines() if stage_log.is_file() else []
        error = text[-1].split(": ", 1)[-1] if text else "no log written"
        lines.append(f"{rule}: {error} (log: {path})")
    return lines
