"""The docs: the site builds strictly, lists the whole API, and its code runs.

- `mkdocs build --strict` (broken links, unknown API names and docstring
  errors fail it) and every public name of `aradals_tf` on the API page;
- every ```python block of README.md and docs/guide/ runs as written, each
  page's blocks in order in one namespace (`epochs=20` becomes `epochs=1`),
  except a block marked `<!-- not run: REASON -->`, which needs a server;
- the serving guide's signature table is the one the code generates.
"""

import html
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
README = os.path.join(ROOT, "README.md")
GUIDES = sorted(
    os.path.join(ROOT, "docs", "guide", name)
    for name in os.listdir(os.path.join(ROOT, "docs", "guide"))
    if name.endswith(".md")
)
NOT_RUN = re.compile(r"<!-- not run: ([^>]+) -->\s*$")


def python_blocks(path):
    """`[(code, reason not to run or None)]` of a Markdown file, in order."""
    text = open(path).read()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
        marker = NOT_RUN.search(text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1] + "\n")
        blocks.append((match.group(1), marker.group(1) if marker else None))
    return blocks


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out


def test_api_reference_lists_every_public_name(site):
    import aradals_tf

    page = html.unescape(open(site / "reference" / "api" / "index.html").read())
    anchors = set(re.findall(r'id="(aradals_tf\.[\w.]+)"', page))
    missing = [
        name
        for name, module in aradals_tf._PUBLIC.items()
        if f"aradals_tf.{module}.{name}" not in anchors
    ]
    assert not missing, missing
    assert set(aradals_tf._PUBLIC) <= set(aradals_tf.__all__)


def test_site_has_every_page(site):
    for page in ("guide/serving", "studies/baselines", "architecture", "reference/metrics"):
        assert (site / page / "index.html").is_file()


def test_readme_is_one_screen_without_local_paths():
    text = open(README).read()
    assert len(text.splitlines()) <= 200
    assert "./scripts/demo.sh" in text and "./scripts/test.sh" in text
    # README.md is the package's long description: no paths of one machine's runs.
    assert not re.search(r"runs/\w", text)


def test_serving_guide_shows_the_generated_signature_table():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import update_docs

    text = open(update_docs.SERVING_PAGE).read()
    assert update_docs.with_signatures_table(text) == text, (
        "Run `.venv/bin/python scripts/update_docs.py` to regenerate the signatures table."
    )


def test_block_reader_honours_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\na = 1\n```\n\n<!-- not run: needs a server -->\n```python\nb = 2\n```\n"
    )
    assert python_blocks(str(page)) == [("a = 1\n", None), ("b = 2\n", "needs a server")]


@pytest.mark.parametrize("path", [README, *GUIDES], ids=lambda p: os.path.relpath(p, ROOT))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip("no Python blocks")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    ran = 0
    for code, reason in blocks:
        if reason:
            continue
        exec(compile(code.replace("epochs=20", "epochs=1"), path, "exec"), namespace)
        ran += 1
    assert ran > 0
