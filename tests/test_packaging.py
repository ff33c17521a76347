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


def test_torch_range_admits_the_cpu_wheel_used_in_ci():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch = next(r for r in project["dependencies"] if name(r) == "torch")
    assert torch == "torch>=2.4,<3"
