"""The workflow's rules and which feeds which, read from the rule files (the deck's workflow slide), never typed.

A rule feeds another when the other's body names ``rules.<rule>``, or its input
names a constant only the rule's output names (directly or through the rule
files' functions, ``unpack(function)`` too, and constants), or a path the
rule's output makes. The rules (those inside an ``if`` block too) come in the
Snakefile's include order; :func:`stages_run` drops the ones a config does not
run (the download without GWOSC data, the evaluate stage without shifted test
sets, the matched filter's without it).
"""

from __future__ import annotations

import re
from pathlib import Path

from .cli import StageError
from .config import shifted_splits, split_source
from .constants import SPLITS
from .families.matched_filter import NAME as MATCHED_FILTER

# indented too: the rules of an `if` block (the matched filter's); a checkpoint is a rule
_RULE = re.compile(r"^[ \t]*(?:rule|checkpoint) (\w+):\s*$", re.M)
_DEF = re.compile(r"^def (\w+)\(.*?(?=^\S)", re.M | re.S)
_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*) = (.+)$", re.M)  # a rule file's top-level constant and what it is made of
_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9_]*\b")


def rule_files(snakefile: Path) -> list[Path]:
    """The rule files the Snakefile includes, in order."""
    text = snakefile.read_text()
    files = [snakefile.parent / name for name in re.findall(r'^include: "([^"]+)"', text, re.M)]
    if not files:
        raise StageError(f"{snakefile}: includes no rule files")
    return files


def section(body: str, name: str) -> str:
    """The text of a rule body's `name:` section (input, output, ...), up to the next section; "" without one."""
    m = re.search(rf"^([ \t]+){name}:[ \t]*\n(.*?)(?=^\1\S|\Z)", body, re.M | re.S)
    return m.group(2) if m else ""


def _named(text: str, functions: dict[str, str], constants: dict[str, str], seen: set[str]) -> set[str]:
    """The constants `text` names, directly or through the rule files' functions and top-level constants it names."""
    out = set()
    for word in set(re.findall(r"\b\w+\b", text)) - seen:
        seen.add(word)
        if word in functions or word in constants:
            out |= _named(functions.get(word) or constants[word], functions, constants, seen)
        if _CONSTANT.fullmatch(word):
            out.add(word)
    return out


def _path_patterns(output: str) -> list[re.Pattern]:
    """The f-string paths of a rule's output as patterns, each ``{{wildcard}}`` matching one path part."""
    return [re.compile(re.sub(r"\\\{\\\{\w+\\\}\\\}", "[^/]+", re.escape(path))) for path in re.findall(r'f"([^"]+)"', output)]


def _input_paths(inputs: str) -> list[str]:
    """The f-string paths of a rule's input, each Python expression in them (``{split}``, not ``{RESULTS}``) as one path part."""
    return [re.sub(r"\{(?![A-Z][A-Z0-9_]*\})[^{}]+\}", "x", path) for path in re.findall(r'f"([^"]+)"', inputs)]


def rule_graph(snakefile: str | Path) -> dict[str, list[str]]:
    """{rule: the rules it feeds}, every rule of the included files but ``all``, in include order.

    A rule feeds another when the other's body names ``rules.<rule>``, or its input names (directly, or through the
    rule files' functions, ``unpack(function)`` included, and top-level constants) a constant that only the rule's
    output names."""
    texts = [path.read_text() + "\n" for path in rule_files(Path(snakefile))]
    bodies, functions, constants = {}, {}, {}
    for text in texts:
        functions.update((m.group(1), m.group(0)) for m in _DEF.finditer(text))
        constants.update((m.group(1), m.group(2)) for m in _ASSIGN.finditer(text))
        starts = list(_RULE.finditer(text))
        for m, end in zip(starts, [s.start() for s in starts[1:]] + [len(text)]):
            bodies[m.group(1)] = text[m.end():end]
    bodies.pop("all", None)
    outputs = {name: set(_CONSTANT.findall(section(body, "output"))) for name, body in bodies.items()}
    produced = {c: name for name, named in outputs.items() for c in named
                if sum(c in other for other in outputs.values()) == 1}  # RESULTS and the like: in every output, no one's
    paths = {name: _path_patterns(section(body, "output")) for name, body in bodies.items()}
    feeds = {name: [] for name in bodies}
    for name, body in bodies.items():
        named = set(re.findall(r"\b(?:rules|checkpoints)\.(\w+)", body))
        named |= {produced[c] for c in _named(section(body, "input"), functions, constants, set()) if c in produced}
        named |= {rule for path in _input_paths(section(body, "input")) for rule, patterns in paths.items()
                  if any(pattern.fullmatch(path) for pattern in patterns)}
        for source in sorted(named - {name}, key=list(bodies).index):
            if source not in feeds:
                raise StageError(f"rule {name} reads rules.{source}, which no included rule file defines")
            feeds[source].append(name)
    return feeds


def stages_run(graph: dict[str, list[str]], config: dict) -> dict[str, list[str]]:
    """`graph` without the rules `config` does not run: download without GWOSC data, evaluate without shifted test sets, the lr search's rules
    without lr_search.extend, the template bank and matched filter without train.variants.matched-filter."""
    gwosc = any(split_source(config, split)[0]["source"] == "gwosc" for split in [*SPLITS, *shifted_splits(config)])
    tests, extend = bool(config["evaluation"]["test_sets"]), config["train"].get("lr_search", {}).get("extend", False)
    matched = MATCHED_FILTER in config["train"]["variants"]
    skipped = {rule for rule, runs in (("download", gwosc), ("evaluate", tests), ("evaluate_extension", tests and extend),
                                       ("lr_search", extend), ("template_bank", matched), ("matched_filter", matched)) if not runs}
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
