"""The explorer in a real browser: JupyterLab on 127.0.0.1 with a token, Debian's Chromium driven by Playwright.

Runs notebook 05 (all cells, through JupyterLab's Run menu) on a tiny model with a planted outlier
dim, then toggles that dim and moves the layer slider, and checks that the loss and predictions
shown change, and come back exactly when the dim is switched on again. After a burst of slider
moves it asserts final state and freshness only (the view shown is the one computed for the
slider's final position, and no older view follows it), never counts or durations, which depend
on the machine's speed. Then it switches on "suggest dims from the screen" and clicks the planted dim
in the ranking, which must switch it off (the view settles on that state). A screenshot is kept in
the test's tmp dir and copied to figures/browser/explorer.png (ignored by git), one with the screen's
suggestions shown to figures/browser/explorer_suggestions.png.

Needs the `chromium` binary (`apt-get install chromium chromium-driver`; `.ci/run` does it);
never `playwright install`. Every wait is bounded; JupyterLab is shut down in any case.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest
from test_widgets import PLANTED, TEXTS, save_tiny_mlm

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "05_explorer.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_S = 120
NOTEBOOK_RUN_S = 300
UPDATE_S = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _notebook_for_test(root: Path, out_dir: Path) -> Path:
    """Notebook 05 with its parameters pointed at a tiny local model and a local text file."""
    model_dir = save_tiny_mlm(root / "tiny_mlm")
    corpus = root / "texts.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    overrides = {
        "model_name": str(model_dir),
        "corpus": str(corpus),
        "split": "all",
        "n_texts": 16,
        "max_length": 32,
        "device": "cpu",
        "out_dir": str(out_dir),
        "profile": "smoke",
        "debounce_s": 0.3,
    }
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for name, value in overrides.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ="))
        lines[index] = f"{name} = {value!r}"
    cell.source = "\n".join(lines)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    path = root / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


def _get(url: str, token: str, timeout: float = 5.0) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 (random free port, random token, temporary root and settings)."""
    with running_lab(tmp_path) as server:
        yield server


@contextlib.contextmanager
def running_lab(tmp_path: Path):
    """JupyterLab serving a test copy of notebook 05 from a temporary root; shut down on exit."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium chromium-driver (see .ci/run)")
    root = tmp_path / "root"
    root.mkdir()
    notebook = _notebook_for_test(root, tmp_path / "out")
    token, port = uuid.uuid4().hex, _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
        # the notebook copy is served from a temp root outside the checkout: name the checkout (paths.py's rule)
        "BERTBUSTERS_PROJECT": str(Path(__file__).resolve().parents[1]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    # no "get notified about official Jupyter news?" toast over the explorer, no update checks
    notification = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    log_path = tmp_path / "jupyterlab.log"
    log = log_path.open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if _get(f"{url}/api/status", token) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "token": token, "notebook": notebook, "log": log_path, "tmp": tmp_path}
    finally:
        _shut_down(proc, url, token)
        log.close()


def _shut_down(proc: subprocess.Popen, url: str, token: str) -> None:
    """Ask the server to shut down (kernels included), then terminate, then kill; each step bounded."""
    if proc.poll() is None:
        try:
            request = urllib.request.Request(
                f"{url}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
            )
            urllib.request.urlopen(request, timeout=10).close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


# ----------------------------------------------------------------------------- page helpers
LOSS = ".bb-explorer .bb-loss-ablated"
PREDICTIONS = ".bb-explorer .bb-predictions"
STATUS = ".bb-explorer .bb-status"


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text(timeout=UPDATE_S * 1000)


def _snapshot(page) -> str:
    """What the explorer shows now (for failure messages)."""
    return page.evaluate("""() => ['.bb-explorer .bb-status', '.bb-explorer .bb-loss', '.bb-explorer .bb-layers']
        .map(s => { const e = document.querySelector(s); return s + ': ' + (e ? e.innerText : 'missing'); })
        .join(' | ')""")


def _wait_text(page, selector: str, *, differs_from: str | None = None, equals: str | None = None) -> str:
    """Wait (bounded) until the element's text differs from / equals a value, and the status is settled."""
    try:
        _wait_for(page, selector, differs_from, equals)
    except Exception as exc:
        raise AssertionError(
            f"{selector} did not become {'!= ' + repr(differs_from) if differs_from else repr(equals)}"
            f" within {UPDATE_S}s; page shows {_snapshot(page)}"
        ) from exc
    return _text(page, selector)


def _wait_for(page, selector: str, differs_from: str | None, equals: str | None) -> None:
    page.wait_for_function(
        """([sel, status, differs, equals]) => {
             const el = document.querySelector(sel), st = document.querySelector(status);
             if (!el || !st || st.textContent.includes('computing')) return false;
             const text = el.innerText;
             return (differs === null || text !== differs) && (equals === null || text === equals);
           }""",
        arg=[selector, STATUS, differs_from, equals],
        timeout=UPDATE_S * 1000,
    )


# Every view the page shows from now on, in order: (generation, the state it was computed for).
RECORD_VIEWS = """() => {
    window.__bbViews = [];
    let last = null;
    const look = () => {
        const st = document.querySelector('.bb-explorer .bb-status');
        if (!st) return;
        const gen = st.getAttribute('data-generation');
        if (gen !== last) { last = gen; window.__bbViews.push({gen: gen, shown: JSON.parse(st.getAttribute('data-shown'))}); }
    };
    look();
    new MutationObserver(look).observe(document.querySelector('.bb-explorer'),
                                       {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def _slider_layers(page) -> list[int]:
    """The layer range the slider's two handles show now."""
    handles = page.locator(".bb-explorer .bb-layers .noUi-handle")
    return sorted(int(float(handles.nth(i).get_attribute("aria-valuenow"))) for i in range(handles.count()))


def _wait_shown(page, dims: list[int], layers: list[int]) -> None:
    """Wait (bounded) until the settled view is the one computed for ``dims`` and ``layers``."""
    page.wait_for_function(
        """([dims, layers]) => {
             const st = document.querySelector('.bb-explorer .bb-status');
             if (!st || st.textContent.includes('computing')) return false;
             const shown = JSON.parse(st.getAttribute('data-shown'));
             return JSON.stringify(shown.dims) === JSON.stringify(dims)
                 && JSON.stringify(shown.layers) === JSON.stringify(layers);
           }""",
        arg=[dims, layers],
        timeout=UPDATE_S * 1000,
    )


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}")).first.click()


def _wait_notebook_ready(page) -> None:
    """The notebook is rendered, its kernel (Python) connected and idle; then focus its first cell."""
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=SERVER_START_S * 1000)
    page.wait_for_function(
        """() => { const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
                   const state = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
                   return name && /Python/.test(name.textContent) && state && state.dataset.status === 'idle'; }""",
        timeout=SERVER_START_S * 1000,
    )
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()


def _run_all_cells(page) -> None:
    """Run > Run All Cells; when no cell starts (a click that came before the kernel was connected), Kernel >
    Restart Kernel and Run All Cells, which waits for the kernel itself."""
    started = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                   .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""
    _menu(page, "Run", "Run All Cells")
    try:
        page.wait_for_function(started, timeout=30_000)
        return
    except Exception:  # noqa: BLE001 - the fallback below is bounded and raises on failure
        page.keyboard.press("Escape")
    _menu(page, "Kernel", "Restart Kernel and Run All Cells")
    page.locator(".jp-Dialog:has-text('Restart') button.jp-mod-accept").first.click(timeout=30_000)
    page.wait_for_function(started, timeout=SERVER_START_S * 1000)


@pytest.mark.slow
def test_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    shot = lab["tmp"] / "explorer.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(UPDATE_S * 1000)
            page.goto(
                f"{lab['url']}/lab/tree/{lab['notebook'].name}?token={lab['token']}", timeout=SERVER_START_S * 1000
            )
            _wait_notebook_ready(page)
            _run_all_cells(page)
            # the last code cell prints the finding: everything above it ran without error
            page.wait_for_selector(
                ".jp-OutputArea-output:has-text('restores it exactly')", timeout=NOTEBOOK_RUN_S * 1000
            )
            page.wait_for_selector(LOSS, timeout=UPDATE_S * 1000)
            page.locator(".bb-explorer").first.scroll_into_view_if_needed()
            intact_loss, intact_predictions = _text(page, LOSS), _text(page, PREDICTIONS)

            toggle = page.locator(f".bb-explorer .bb-dim-{PLANTED}").first
            toggle.click()
            ablated_loss = _wait_text(page, LOSS, differs_from=intact_loss)
            ablated_predictions = _text(page, PREDICTIONS)
            assert ablated_predictions != intact_predictions

            handle = page.locator(".bb-explorer .bb-layers .noUi-handle-lower").first
            handle.focus()
            handle.press("ArrowRight")  # layers 0-2 -> 1-2: the first layer keeps its dim
            late_loss = _wait_text(page, LOSS, differs_from=ablated_loss)
            assert late_loss not in (intact_loss, ablated_loss)
            assert page.locator(".Toastify__toast", has_text="news").count() == 0, "the news toast is shown"
            page.locator(".bb-explorer").first.screenshot(path=str(shot))

            # A burst of moves ending at layers 0-2, the state whose numbers were computed above: however
            # the front end and the kernel coalesce the moves (that depends on the machine's speed), the view
            # must settle on the slider's final position with the numbers of that state, and no view of an
            # older state may be shown once the final one is.
            page.evaluate(RECORD_VIEWS)
            for key in ["ArrowRight", "ArrowLeft"] * 4 + ["ArrowLeft"]:
                handle.press(key)
            final = _slider_layers(page)
            assert final == [0, 2], final
            _wait_shown(page, [PLANTED], final)
            assert _text(page, LOSS) == ablated_loss
            assert _text(page, PREDICTIONS) == ablated_predictions

            toggle.click()  # the dim on again: the intact numbers come back exactly
            _wait_shown(page, [], final)
            assert _wait_text(page, LOSS, equals=intact_loss) == intact_loss
            assert _wait_text(page, PREDICTIONS, equals=intact_predictions) == intact_predictions
            views = page.evaluate("window.__bbViews")
            states = [(v["shown"]["dims"], v["shown"]["layers"]) for v in views]
            first_final = states.index(([PLANTED], final))
            after = states[first_final:]
            assert after[-1] == ([], final), states
            assert all(st == ([PLANTED], final) for st in after[: after.index(([], final))]), (
                f"a view of an older state was shown after the final one: {states}"
            )

            # The screen's suggestions: none until asked; switched on, the ranking lists the planted dim, and a
            # click on it switches it off: the view settles on the planted dim's numbers computed above.
            assert page.locator(".bb-explorer .bb-suggest-dim").count() == 0
            page.locator(".bb-explorer .bb-suggest").first.click()
            page.locator(f".bb-explorer .bb-suggest-{PLANTED}").first.click(timeout=UPDATE_S * 1000)
            _wait_shown(page, [PLANTED], final)
            assert _wait_text(page, LOSS, equals=ablated_loss) == ablated_loss
            assert "mod-active" in (toggle.get_attribute("class") or "")
            page.locator(".bb-explorer").first.screenshot(path=str(lab["tmp"] / "explorer_suggestions.png"))
        except Exception:
            if "page" in locals():
                page.screenshot(path=str(lab["tmp"] / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000
    target = REPO / "figures" / "browser" / "explorer.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, target)
    shutil.copyfile(lab["tmp"] / "explorer_suggestions.png", target.with_name("explorer_suggestions.png"))
    findings = json.loads((lab["tmp"] / "out" / "findings.json").read_text())
    assert findings and "held" in findings[0]
