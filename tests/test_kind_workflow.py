"""The instructors' workflow and the sample image's base, as files: read, not run (this machine has no
GitHub runner and no registry). They guard what was wrong once: Node 20 actions (removed from the runners), a
job limit below what its steps may take, and a frozen patch tag as the image's base."""

from __future__ import annotations

import re

import yaml

from labkit import paths

WORKFLOW = paths.ROOT / ".github" / "workflows" / "lab-on-kind.yml"
#: The first Node 24 major of each action the workflow uses (each action's action.yml ``runs.using``).
NODE24_MAJORS = {"actions/checkout": 5, "actions/setup-python": 6, "actions/upload-artifact": 6}


def _job() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["lab-on-kind"]


def test_every_action_is_at_a_node24_major():
    uses = [step["uses"] for step in _job()["steps"] if "uses" in step]
    assert uses
    for ref in uses:
        name, _, version = ref.partition("@")
        assert int(version.lstrip("v").split(".")[0]) >= NODE24_MAJORS[name], ref


def test_the_job_limit_covers_its_steps_and_the_notebooks_step_has_room():
    job = _job()
    limits = [step.get("timeout-minutes", 0) for step in job["steps"]]
    assert job["timeout-minutes"] >= sum(limits) > 60
    [notebooks] = [s for s in job["steps"] if "test_notebooks.py" in s.get("run", "")]
    assert notebooks["timeout-minutes"] >= 100  # a dozen notebooks, each allowed 900 s


def test_the_runner_comment_says_the_size_holds_for_public_repositories_only():
    text = WORKFLOW.read_text()
    assert "only in PUBLIC repositories" in text and "2 CPUs / 8 GiB" in text


def test_the_image_base_is_a_maintained_tag_pinnable_by_digest():
    dockerfile = (paths.SERVICE_DIR / "Dockerfile").read_text()
    [base] = re.findall(r"^ARG BASE=(\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"python:3\.11-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    assert "FROM ${BASE}" in dockerfile
    assert "docker buildx imagetools inspect" in dockerfile  # how to pin and refresh the digest
