"""The project's promises: one source of truth for dependencies, a README whose first commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_what_pyproject_declares():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = _pyproject()["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)

    python = next(d for d in conda if d.startswith("python"))
    assert python.split("=")[1] + ".0" in SpecifierSet(project["requires-python"])

    editable = [p for p in pip if p.startswith("-e ")]
    assert editable, "environment.yml must install the project itself from pyproject.toml"
    extras = re.findall(r"\[([^\]]+)\]", editable[0])
    for extra in extras[0].split(",") if extras else []:
        assert extra in project["optional-dependencies"], f"environment.yml asks for unknown extra {extra!r}"
    declared = {Requirement(r).name.lower() for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {Requirement(r).name.lower() for r in extra}
    for other in (p for p in pip if not p.startswith("-e ")):
        assert Requirement(other).name.lower() in declared, (
            f"{other} is in environment.yml but not pyproject.toml"
        )
    for pkg in conda:
        name = re.split(r"[=<>]", pkg)[0]
        assert name in {"python", "pip", "make"}, f"conda package {name} is not declared in pyproject.toml"


def test_readme_starts_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.strip() for line in readme[:25] if re.match(r"^\s*(make|\./|python|bash)\b", line)]
    assert commands[:2] == ["make tour", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("tour", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_changes_print_like_kubectl():
    from labkit.lab import Change

    assert str(Change("Namespace", "", "payments-prod", "unchanged")) == "namespace/payments-prod unchanged"
    assert (
        str(Change("VirtualService", "payments-prod", "currency-converter", "configured"))
        == "virtualservice/currency-converter (payments-prod) configured"
    )


def test_an_error_carries_what_went_wrong_and_reads_one_way():
    from labkit.errors import LabError, UnsupportedError

    err = UnsupportedError(
        "not supported by the local backend",
        "use the kind backend (LAB_BACKEND=kind)",
        where="vs.yaml (document 2) VirtualService/cc",
        field="spec.http[0].corsPolicy",
    )
    assert isinstance(err, LabError)
    assert (err.where, err.field, err.fix) == (
        "vs.yaml (document 2) VirtualService/cc",
        "spec.http[0].corsPolicy",
        "use the kind backend (LAB_BACKEND=kind)",
    )
    assert str(err) == (
        "vs.yaml (document 2) VirtualService/cc spec.http[0].corsPolicy: not supported by the local backend\n"
        "What to do: use the kind backend (LAB_BACKEND=kind)"
    )


def test_the_sample_image_copies_every_module_the_app_imports():
    """On kind the app runs from its image: a module app.py imports but the Dockerfile leaves out would
    crash every pod at start (the local backend runs the source folder and would not notice)."""
    import ast

    service = ROOT / "services" / "currency-converter"
    local = {p.stem for p in service.glob("*.py")}
    tree = ast.parse((service / "app.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    copied = {
        word.removesuffix(".py")
        for line in (service / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for word in line.split()[1:-1]
    }
    assert (imported & local) - {"app"} <= copied
