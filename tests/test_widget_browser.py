"""The widget in a real browser: JupyterLab on loopback, notebook 05 run in headless Chromium.

Starts `jupyter lab` (this interpreter, a free port, a token, its own settings and workspaces in a
temporary folder), opens a copy of notebooks/05_inference.ipynb (the file in the repository is never
opened, so it cannot be saved over), runs all cells on the smoke profile, types two reviews into the
widget and checks that the label and the probability bar appear and change, with the base model's
answer (adapter off: near 50/50) beside them. The widget's screenshot
goes to $WIDGET_SCREENSHOT (e.g. docs/widget.png) or the test's temporary folder. Skips without
/usr/bin/chromium (or $CHROMIUM_PATH) or the `playwright` package; never downloads a browser.
The notebook runs on $LORA_PROFILE and LORA_* settings when they are set (smoke otherwise, with the
session's smoke adapter), so the screenshot can show a real model.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_inference.ipynb"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REVIEWS = ["This movie was absolutely fantastic! The acting was wonderful and the story kept me hooked.",
           "A dull and boring film. The plot was tedious and the ending was awful."]
RUN_ALL_TIMEOUT_S = 480  # every cell of the notebook, on a busy 2-core machine

# Is the current document's kernel idle with every code cell executed? (window.jupyterapp: expose_app_in_browser)
NOTEBOOK_DONE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle' || !panel.content) return false;
  return panel.content.widgets.every(c => c.model.type !== 'code' || c.model.executionCount !== null);
}"""
KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && !!panel.content;
}"""
WIDGET_OR_ERROR = """() => !!document.querySelector('.sentiment-widget textarea')
  || !!document.querySelector('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')"""
LABEL = ".sentiment-label .widget-html-content"
BAR = ".sentiment-bar .progress-bar"
BASE_LABEL = ".sentiment-base-label .widget-html-content"
BASE_BAR = ".sentiment-base-bar .progress-bar"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_folder(tmp: Path) -> Path:
    """A JupyterLab root holding `utils` (a link to the project's) and a copy of notebook 05."""
    lab = tmp / "lab"
    (lab / "notebooks").mkdir(parents=True)
    (lab / "utils").symlink_to(ROOT / "utils", target_is_directory=True)
    shutil.copy2(NOTEBOOK, lab / "notebooks" / NOTEBOOK.name)
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no news or update checks: the machine may be offline
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return lab


def start_lab(tmp: Path, lab: Path, env: dict, port: int, token: str) -> subprocess.Popen:
    """Start JupyterLab on 127.0.0.1:port and wait (at most 90 s) until it answers."""
    log = open(tmp / "jupyter.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--allow-root", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={lab}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=lab)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited at start:\n{(tmp / 'jupyter.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.5)
    stop_lab(proc)
    raise AssertionError(f"JupyterLab did not answer in 90 s:\n{(tmp / 'jupyter.log').read_text()[-3000:]}")


def stop_lab(proc: subprocess.Popen) -> None:
    """Stop JupyterLab (it shuts its kernels down on SIGTERM); kill it if it has not gone in 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def bar_width(page, bar: str = BAR) -> str:
    """A probability bar's width, e.g. '37.5%' (set in the bar's style attribute)."""
    return page.eval_on_selector(bar, "e => e.style.width")


def test_widget_predicts_in_a_real_jupyterlab(tmp_path, request):
    if not CHROMIUM.is_file():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

    env = {**os.environ, "LORA_PROFILE": os.environ.get("LORA_PROFILE", "smoke"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "TOKENIZERS_PARALLELISM": "false"}
    if env["LORA_PROFILE"] == "smoke" and "LORA_OUTPUT_DIR" not in os.environ:
        env["LORA_OUTPUT_DIR"] = str(request.getfixturevalue("smoke_run"))  # the notebook finds a trained adapter
    before = NOTEBOOK.read_bytes()
    lab, port, token = lab_folder(tmp_path), free_port(), secrets.token_hex(16)
    proc = start_lab(tmp_path, lab, env, port, token)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.on("dialog", lambda dialog: dialog.dismiss())
                page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/{NOTEBOOK.name}?token={token}")
                page.wait_for_function(KERNEL_IDLE, timeout=120_000)
                page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

                page.wait_for_function(WIDGET_OR_ERROR, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
                errors = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')
                assert errors.count() == 0, f"a cell failed:\n{errors.first.inner_text()[-2000:]}"
                page.wait_for_function(NOTEBOOK_DONE, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
                assert errors.count() == 0, f"a cell failed:\n{errors.first.inner_text()[-2000:]}"

                widget = page.locator(".sentiment-widget")
                widget.scroll_into_view_if_needed()
                assert bar_width(page) in ("", "0%") and bar_width(page, BASE_BAR) in ("", "0%")  # nothing typed yet
                assert "Type or paste" in page.inner_text(".sentiment-note")

                textarea = page.locator(".sentiment-text textarea")
                textarea.fill(REVIEWS[0])
                page.wait_for_function(f"() => /POSITIVE|NEGATIVE/.test(document.querySelector('{LABEL}').textContent)"
                                       f" && !['', '0%'].includes(document.querySelector('{BAR}').style.width)")
                first_label, first_width = page.inner_text(LABEL), bar_width(page)
                assert "hooked." in page.inner_text(".sentiment-words")
                page.wait_for_function(f"() => /POSITIVE|NEGATIVE/.test(document.querySelector('{BASE_LABEL}').textContent)")
                assert "Before LoRA" in page.inner_text(".sentiment-widget") and "After LoRA" in page.inner_text(".sentiment-widget")
                base_width = float(bar_width(page, BASE_BAR).rstrip("%"))
                assert 35 < base_width < 65, f"the base model's untrained head should answer near 50/50, not {base_width}%"
                assert f"{base_width / 100:.3f}" in page.inner_text(BASE_LABEL)
                widget.screenshot(path=os.environ.get("WIDGET_SCREENSHOT") or str(tmp_path / "widget.png"))

                textarea.fill(REVIEWS[1])
                page.wait_for_function(f"() => document.querySelector('{BAR}').style.width !== '{first_width}'")
                page.wait_for_function("() => document.querySelector('.sentiment-words').textContent.includes('awful.')")
                second_label = page.inner_text(LABEL)
                assert second_label != first_label and ("POSITIVE" in second_label or "NEGATIVE" in second_label)
                assert float(bar_width(page).rstrip("%")) != float(first_width.rstrip("%"))

                textarea.fill("   ")  # cleared: back to the prompt, no traceback
                page.wait_for_function("() => document.querySelector('.sentiment-note').textContent.includes('Type or paste')")
                assert bar_width(page, BASE_BAR) in ("", "0%") and page.inner_text(BASE_LABEL).strip() == ""
                assert "Traceback" not in page.inner_text(".sentiment-widget")
            finally:
                browser.close()
    finally:
        stop_lab(proc)
    assert NOTEBOOK.read_bytes() == before, "the repository's notebook must not be modified"
