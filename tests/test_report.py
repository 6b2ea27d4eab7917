"""The HTML report: self-contained page and PNGs, optional sections, the CLI, and a real browser render."""

from __future__ import annotations

import base64
import copy
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import find_circuit
from circuits.report import ReportError, load_result, write_report

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parent.parent
DATA_URI = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def payload() -> dict:
    """A real run on the planted toy model (conftest), so the ROC curve comes from the pipeline."""
    from conftest import ToyTask, plant_heads, tiny_model

    from circuits.models import LoadedModel
    from tasks.base import GroundTruth

    heads = {(0, 1), (1, 3)}
    task = ToyTask(GroundTruth(heads=tuple(sorted(heads)), edges=(((0, 1), (1, 3)),), source="planted"))
    tok = task.word_tokenizer()
    model = tiny_model(tok.vocab_size)
    plant_heads(model, heads)
    loaded = LoadedModel(model=model, tokenizer=tok, name="planted-toy")
    result = find_circuit(task, loaded, FindConfig(n_train=10, n_score=30, steps=60,
                                                   sae="per-head", hook="z"))
    return result.to_json()


def test_report_is_one_self_contained_page_with_pngs_beside_it(payload, tmp_path):
    files = write_report(payload, tmp_path / "report.html")
    assert set(files) == {"report", "circuit", "heatmap", "roc"}
    page = (tmp_path / "report.html").read_text()
    inlined = [base64.b64decode(b) for b in DATA_URI.findall(page)]
    assert len(inlined) == 3
    for key in ("circuit", "heatmap", "roc"):
        png = Path(files[key]).read_bytes()
        assert png.startswith(PNG_MAGIC) and png in inlined
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # nothing fetched from elsewhere
    assert "<script" not in page
    for text in ("planted-toy", "node ROC AUC 1.000", "Timings", "otsu", "L1H3"):
        assert text in page
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report.circuit.png", "report.heatmap.png", "report.html", "report.roc.png"]  # no temp files left


def test_without_ground_truth_there_is_no_roc_and_the_reason_is_shown(payload, tmp_path):
    bare = {**payload, "evaluation": None, "evaluation_note": "no ground truth: random weights",
            "task": "<b>x</b> & y"}
    files = write_report(bare, tmp_path / "r.html")
    assert "roc" not in files
    page = Path(files["report"]).read_text()
    assert "no ground truth: random weights" in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page and "<b>x</b>" not in page  # text is escaped


def test_stability_block_is_drawn_when_present(payload, tmp_path):
    n_layers, n_heads = payload["n_layers"], payload["n_heads"]
    stable = copy.deepcopy(payload)
    stable["stability"] = {
        "n_seeds": 3,
        "inclusion_frequency": np.linspace(0, 1, n_layers * n_heads).reshape(n_layers, n_heads).tolist(),
        "jaccard": [[1.0, 0.5, 1.0], [0.5, 1.0, 0.5], [1.0, 0.5, 1.0]],
        "evaluation": {"roc_auc_mean": 0.97, "roc_auc_std": 0.02},
    }
    files = write_report(stable, tmp_path / "s.html")
    assert {"stability_inclusion", "stability_jaccard"} <= set(files)
    page = Path(files["report"]).read_text()
    assert "Stability across SAE seeds" in page and "roc_auc_std" in page
    assert len(DATA_URI.findall(page)) == 5
    for other in ({"inclusion_frequency": [{"layer": 0, "head": 1, "frequency": 1.0}], "jaccard": [0.2, 0.4]},
                  {"inclusion_frequency": {"L0H1": 1.0, "L1H3": 0.5},
                   "jaccard": {"mean": 0.3, "pairs": [0.3]}}):
        stable["stability"] = other
        assert {"stability_inclusion", "stability_jaccard"} <= set(write_report(stable, tmp_path / "t.html"))
    stable["stability"] = {"inclusion_frequency": "unexpected", "n_seeds": 2}
    files = write_report(stable, tmp_path / "u.html")  # unknown shapes: tables only, never a crash
    assert "stability_inclusion" not in files and "n_seeds" in Path(files["report"]).read_text()


def test_bad_result_files_are_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        load_result(tmp_path)
    (tmp_path / "result.json").write_text("{oops")
    with pytest.raises(ReportError, match="not valid JSON"):
        load_result(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"task": "t"}))
    with pytest.raises(ReportError, match="missing model, n_layers, n_heads, heads"):
        load_result(tmp_path)


def test_cli_find_report_and_report_command(tmp_path):
    out, page = tmp_path / "run", tmp_path / "find.html"
    result = runner.invoke(app, ["find", "--task", "ioi", "--model", "random:attn-only-4l", "--n-score", "16",
                                 "--steps", "20", "--out", str(out), "--report", str(page), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["files"]["report"] == str(page) and page.is_file()
    assert json.loads((out / "result.json").read_text())["files"]["report"] == str(page)
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and (out / "report.heatmap.png").is_file()

    for args, fragment in [(["report", str(tmp_path / "nowhere")], "does not exist"),
                           (["report", str(out), "--out", str(tmp_path)], "is a directory"),
                           (["report", str(out)], "already exist"),  # never overwritten silently
                           (["find", "--task", "ioi", "--model", "random:attn-only-4l", "--report",
                             str(page)], "already exist")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert fragment in result.output and "Traceback" not in result.output


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
NO_BROWSER = ("Chromium is not installed and could not be installed here (Debian: apt-get install -y "
              "chromium; .ci/run installs it)")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars")
# Injected into a copy of the page only (reports carry no script): after load, record images that did not
# decode and h2 sections with nothing in them, on <body data-check>, which --dump-dom then prints.
CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src);
  const empty = [...document.querySelectorAll('h2')].filter(h => {
    const n = h.nextElementSibling;
    const media = n && (n.tagName === 'IMG' || n.querySelector('img'));
    return !n || n.tagName === 'H2' || (!n.textContent.trim() && !media);
  }).map(h => h.textContent);
  document.body.setAttribute('data-check', JSON.stringify({images: document.images.length, bad, empty,
    sections: document.querySelectorAll('h2').length}));
});</script>"""


def screenshot(page: Path, png: Path, profile: Path, height: int = 1400) -> np.ndarray:
    from matplotlib.image import imread

    subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", f"--window-size=1100,{height}",
                    f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return imread(png)[..., :3]  # [h, w, rgb] in 0..1


def browser_check(page: Path, tmp: Path) -> dict:
    """Open `page` (an instrumented copy) in headless Chromium: its images, empty sections, console lines."""
    probe = tmp / f"{page.stem}.probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    run = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp / 'probe-profile'}",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    found = re.search(r'data-check="([^"]*)"', run.stdout)
    assert found, f"the page did not finish loading in Chromium: {run.stdout[:300]}"
    check = json.loads(html.unescape(found.group(1)))
    check["console"] = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return check


def assert_renders(page: Path, tmp: Path, n_images: int, height: int = 1400) -> np.ndarray:
    """The browser test of a report: every image decodes, no section is empty, nothing on the console, and
    a screenshot that is not blank."""
    check = browser_check(page, tmp)
    assert check["console"] == [], check["console"]
    assert check["images"] == n_images and check["bad"] == [], check
    assert check["sections"] >= 3 and check["empty"] == [], check
    shot = screenshot(page, tmp / f"{page.stem}.shot.png", tmp / "shot-profile", height)
    assert shot.shape[0] >= 1000 and shot.shape[1] >= 1000
    assert shot.std() > 0.05  # not a blank page
    return shot


def colourful_fraction(image: np.ndarray) -> float:
    """Share of clearly coloured pixels: figures (viridis) have many, text and tables almost none."""
    return float(((image.max(-1) - image.min(-1)) > 0.25).mean())


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_report_renders_in_headless_chromium_with_its_figures(payload, tmp_path):
    files = write_report(payload, tmp_path / "report.html")
    shot = assert_renders(Path(files["report"]), tmp_path, n_images=len(files) - 1)
    # Control: the same page with its images removed has (almost) no coloured pixels, so the
    # figures must be what colours the real screenshot.
    control = tmp_path / "control.html"
    control.write_text(DATA_URI.sub("src=''", Path(files["report"]).read_text()))
    bare = screenshot(control, tmp_path / "control.png", tmp_path / "profile2")
    assert colourful_fraction(bare) < 0.005
    assert colourful_fraction(shot) > 0.02


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_compare_report_renders_in_headless_chromium(tmp_path):
    from circuits.report.compare import write_compare_report

    report = json.loads((ROOT / "benchmarks" / "results" / "compare" / "ioi" / "compare.json").read_text())
    files = write_compare_report(report, tmp_path / "compare.html", {(0, 1), (2, 3)})
    shot = assert_renders(Path(files["report"]), tmp_path, n_images=len(files) - 1, height=4000)
    control = tmp_path / "control.html"  # as above: without its images the page is grey text
    control.write_text(DATA_URI.sub("src=''", Path(files["report"]).read_text()))
    bare = screenshot(control, tmp_path / "control.png", tmp_path / "profile2", height=4000)
    assert colourful_fraction(bare) < 0.005
    assert colourful_fraction(shot) > 4 * max(colourful_fraction(bare), 0.005)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_the_browser_check_catches_a_broken_page(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><h1>t</h1><h2>Figures</h2>"
                      "<img alt='gone' src='missing.png'><h2>Empty</h2><h2>Last</h2><p>x</p></body></html>")
    check = browser_check(broken, tmp_path)
    assert check["bad"] == ["gone"] and check["empty"] == ["Empty"]
