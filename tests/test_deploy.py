"""deploy/: the recipes run the README's commands, with options that exist, the storage in the variable
the code reads, and extras the package has (no container runtime runs here: what they say is checked)."""

from __future__ import annotations

import re
from importlib.metadata import metadata
from pathlib import Path

import yaml

from mnist_sweep._base.paths import STORAGE_ENV
from mnist_sweep.cli.args import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
README = (DEPLOY.parent / "README.md").read_text(encoding="utf-8")


def _commands() -> list[tuple[str, list[str], dict[str, str]]]:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    job = yaml.safe_load((DEPLOY / "k8s-job.yaml").read_text())
    found = [(f"compose {name}", s["command"], s.get("environment", {})) for name, s in compose["services"].items()
             if "command" in s]
    for c in job["spec"]["template"]["spec"]["containers"]:
        found.append((f"k8s {c['name']}", c["command"], {e["name"]: e.get("value", "secret") for e in c["env"]}))
    return found


def test_every_recipe_runs_a_command_the_cli_takes_with_the_storage_in_its_variable() -> None:
    commands = _commands()
    assert {name for name, _, _ in commands} == {"compose worker", "compose dashboard", "k8s worker"}
    for name, argv, env in commands:
        assert argv[:3] == ["python", "-m", "mnist_sweep"], name
        args = build_parser().parse_args(argv[3:])  # exits on an unknown option
        assert args.command in ("worker", "dashboard"), name
        assert getattr(args, "storage", None) is None and STORAGE_ENV in env, name  # no password on a command line
        assert f"mnist_sweep {argv[3]}" in README or argv[3] in README, name


def test_the_image_installs_extras_the_package_has() -> None:
    extras = metadata("mnist-sweep").get_all("Provides-Extra") or []
    named = set()
    for text in [(DEPLOY / f).read_text() for f in ("Dockerfile", "k8s-job.yaml", "docker-compose.yml")]:
        for group in re.findall(r"\.\[([a-z,]+)\]", text):
            named |= set(group.split(","))
    assert named and named <= set(extras), named - set(extras)


def test_the_readme_shows_both_recipes() -> None:
    assert "deploy/docker-compose.yml" in README and "deploy/k8s-job.yaml" in README
    assert "docker compose -f deploy/docker-compose.yml up" in README
