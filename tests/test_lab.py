"""`make lab` opens the .py notebooks as notebooks: the JupyterLab server that `make lab` starts reports the
Jupytext notebook as the default viewer of Python files (asked through the lab settings API, no browser).

The server is started from `make -n lab`'s command on a free local port with a token, and stopped after."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "@jupyterlab/docmanager-extension:plugin"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def lab_command(*args: str) -> str:
    """The shell command `make lab LAB_ARGS=...` runs (a dry run: `make -n`, which runs nothing)."""
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "lab", f"LAB_ARGS={' '.join(args)}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = out.replace("\\\n", " ").splitlines()
    return next(line for line in commands if " lab --notebook-dir nbs" in line)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_make_lab_makes_the_jupytext_notebook_the_default_viewer_of_python_files(tmp_path: Path) -> None:
    port, token = free_port(), secrets.token_hex(16)
    options = ["--no-browser", f"--port={port}", "--ServerApp.port_retries=0", "--ip=127.0.0.1"]
    command = lab_command(*options, f"--IdentityProvider.token={token}")
    assert command.startswith(f'JUPYTER_CONFIG_PATH="{REPO}/jupyter')
    log = tmp_path / "lab.log"
    with open(log, "w") as output:
        # HOME in the test folder: no user settings of this machine take part
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
        server = subprocess.Popen(["bash", "-c", command], cwd=REPO, stdout=output, stderr=output, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    settings = get(f"{base}/lab/api/settings/{PLUGIN}", token)
                    break
                except (urllib.error.URLError, ConnectionError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"JupyterLab did not answer:\n{log.read_text()[-3000:]}")
                    time.sleep(0.5)
            every = get(f"{base}/lab/api/settings/", token)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    # JupyterLab applies the overrides to the schema's defaults (the page computes the composite from them)
    assert settings["schema"]["properties"]["defaultViewers"]["default"] == {"python": "Jupytext Notebook"}
    assert "defaultViewers" not in (settings.get("settings") or {})  # no user setting in between
    # ... where JupyterLab's own default opens them in the text editor
    schema = Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab/docmanager-extension/plugin.json"
    assert json.loads(schema.read_text())["properties"]["defaultViewers"]["default"] == {}
    # the viewer exists: jupytext's JupyterLab extension is installed and reports its settings
    assert any(entry["id"].startswith("jupyterlab-jupytext") for entry in every["settings"])
