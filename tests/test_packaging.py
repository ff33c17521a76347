"""pip (pyproject.toml) and conda (environment.yml) users get the same dependencies."""

import re
import tomllib

import yaml

from conftest import REPO

# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}
# conda-only tools that are not Python dependencies
CONDA_ONLY = {"python", "pip", "quarto"}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_and_pyproject_name_the_same_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_deps = {name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip_section = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section |= {name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            conda.add(CONDA_TO_PYPI.get(name(dep), name(dep)))
    assert "quarto" in conda, "conda users get Quarto from conda-forge"
    assert (conda - CONDA_ONLY) | pip_section == pip_deps


def test_torch_range_admits_the_cpu_wheel_that_ci_pins():
    """CI installs one CPU build of torch before the project: the project's range (pip and conda) must admit it."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = re.findall(r"pip install[^\n]*\btorch==([0-9][0-9.]*)", (REPO / ".ci" / "run").read_text())
    assert len(pins) == 1, ".ci/run installs exactly one pinned torch before the project"
    pinned = Version(pins[0])
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_range = next(Requirement(r) for r in project["dependencies"] if name(r) == "torch").specifier
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = next(d for d in env["dependencies"] if isinstance(d, str) and name(d) == "pytorch")
    conda_range = Requirement("torch" + conda[len("pytorch"):].replace(" ", "")).specifier
    assert pinned in pip_range, f"pyproject.toml's torch range {pip_range} refuses CI's torch {pinned}"
    assert pinned in conda_range, f"environment.yml's pytorch range {conda_range} refuses CI's torch {pinned}"


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_stage_and_tool_named_in_the_docs_is_installed():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "config" / "README.md"]
    named = {m for path in docs for m in re.findall(r"`(gwlora-[a-z-]+)", path.read_text())}
    assert named <= set(console_scripts()), named - set(console_scripts())
    modules_with_main = {p.stem for p in (REPO / "src" / "gwlora").glob("*.py") if re.search(r"^def main\(", p.read_text(), re.M)}
    assert modules_with_main == {target.split(":")[0].split(".")[1] for target in console_scripts().values()}


class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def test_every_command_line_option_has_help(monkeypatch):
    import argparse
    import importlib

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda self, *a, **k: (_ for _ in ()).throw(_Parsed(self)))
    for script, target in console_scripts().items():
        module, _, func = target.partition(":")
        try:
            getattr(importlib.import_module(module), func)([])
        except _Parsed as parsed:
            parser = parsed.parser
        else:
            raise AssertionError(f"{script} parsed no arguments")
        assert parser.description, script
        undocumented = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
            undocumented += [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions if not a.help]
        assert undocumented == [], f"{script}: options without help: {undocumented}"
