"""JupyterLab in a real browser: start JupyterLab from the project's venv on 127.0.0.1, open
Strategy_SMA.ipynb in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium), run all cells with the "Python (algotrading)" kernel, and check that no cell shows an
error and that the price/equity chart rendered. Screenshots go to the test's folder (and to
ALGO_SCREENSHOT_DIR when set).

Without Chromium the test skips with the reason; under CI=true it fails instead (.ci/run installs
Chromium, so a missing browser there is a broken CI, not a reason to skip)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "2_Strategies/Strategy_SMA.ipynb"
KERNEL = ("algotrading", "Python (algotrading)")
pytestmark = pytest.mark.browser


def browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "no Chromium found: apt-get install chromium chromium-driver"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_kernel() -> None:
    """The kernelspec `make` installs into the venv (installed the same way if missing)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL[0] not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name",
                        KERNEL[0], "--display-name", KERNEL[1]], check=True, capture_output=True)


@pytest.fixture
def lab(tmp_path):
    """JupyterLab over a copy of the notebook (autosave must never touch the committed one),
    with the project's kernel selected as a user on a notebook instance would."""
    from algotrading import lake, sources

    lake.write(sources.read("sample").frame)  # the default data, in the test's own lake
    ensure_kernel()
    work = tmp_path / "lab"
    (work / "2_Strategies").mkdir(parents=True)
    nb = json.loads((ROOT / NOTEBOOK).read_text())
    nb["metadata"]["kernelspec"] = {"name": KERNEL[0], "display_name": KERNEL[1], "language": "python"}
    for cell in nb["cells"]:  # start clean: every output the test sees comes from this run
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (work / NOTEBOOK).write_text(json.dumps(nb))
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (no virtual scrolling), so the page holds all outputs to check
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # offline
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "jupyterlab.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
                             f"--port={port}", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={work}", "--allow-root"],  # CI runs as root
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    started = (tmp_path / "jupyterlab.log").read_text()[-2000:]
                    raise RuntimeError(f"JupyterLab did not start: {started}") from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_strategy_notebook_runs_in_jupyterlab(lab, tmp_path):
    chromium, chromedriver = browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    shots = [tmp_path, *(Path(d) for d in [os.environ.get("ALGO_SCREENSHOT_DIR")] if d)]
    try:
        driver.get(lab)
        wait = WebDriverWait(driver, 120)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell")))
        wait.until(lambda d: KERNEL[1] in d.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar").text)
        wait.until(lambda d: d.execute_script(
            "const s = document.querySelector('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator');"
            "return s !== null && s.getAttribute('data-status') === 'idle';"))
        # Run > Run All Cells, through the menu bar as a user would
        driver.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')]"
                                      "[.//div[text()='Run']]").click()
        driver.find_element(By.XPATH, "//li[contains(@class,'lm-Menu-item')]"
                                      "[.//div[text()='Run All Cells']]").click()
        prompts = "return Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))" \
                  ".map(e => e.textContent.trim());"
        WebDriverWait(driver, 600, poll_frequency=1).until(
            lambda d: all(p[1:-2].isdigit() for p in d.execute_script(prompts)))
        errors = driver.find_elements(
            By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert not errors, "error or warning output in JupyterLab: " + errors[0].text[-500:]
        cells = driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")
        chart = next(c for c in cells
                     if "sma.chart(" in c.find_element(By.CSS_SELECTOR, ".jp-InputArea").text)
        image = chart.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output img")
        width = "return arguments[0].complete && arguments[0].naturalWidth"
        assert driver.execute_script(width, image) >= 500  # a real chart, not a broken image
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", chart)
        time.sleep(0.5)
        for folder in shots:
            folder.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(folder / "jupyterlab_strategy_sma.png"))
        conclusion = next(c for c in cells if "sma.conclusion()" in c.text)
        assert "buy-and-hold" in conclusion.find_element(By.CSS_SELECTOR, ".jp-OutputArea").text
    finally:
        driver.quit()
