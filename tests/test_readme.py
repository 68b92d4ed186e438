"""The README's "Use the results" section runs as written: its shell lines and its Python,
in a fresh folder, with the installed `aesweep` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

README = Path(__file__).parents[1] / "README.md"


def section_blocks(title: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the README section `## title`."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return re.findall(r"^```(\w+)\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)


def test_use_the_results_runs_as_written(tmp_path: Path) -> None:
    blocks = section_blocks("Use the results")
    assert [lang for lang, _ in blocks] == ["bash", "python"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks[0][1]], env=env, capture_output=True, text=True
    )
    assert shell.returncode == 0, shell.stderr[-3000:]
    assert shell.stdout.splitlines()[-1] == "outputs/sweeps/small/dim_z=4/codes_test.npz"
    compared = pd.read_csv(tmp_path / "outputs/compare/small-vs-hidden64/loss_vs_dim.csv")
    assert sorted(set(compared["sweep"])) == ["hidden64", "small"] and len(compared) == 4

    python = subprocess.run(
        [sys.executable, "-c", blocks[1][1]], env=env, capture_output=True, text=True
    )
    assert python.returncode == 0, python.stderr[-3000:]
    assert "torch.Size([500, 4]) torch.Size([500, 784])" in python.stdout
    labels = np.load(tmp_path / "outputs/sweeps/small/dim_z=4/codes_test.npz")["labels"][:10]
    assert python.stdout.rstrip().endswith(str(labels))


def test_the_readme_stays_short_and_its_links_and_the_docs_links_resolve() -> None:
    """A newcomer's page: at most 250 lines; the rest lives in docs/, one page per topic."""
    assert len(README.read_text().splitlines()) <= 250
    pages = [README, *sorted((README.parent / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            assert linked.exists(), f"{page.name} links to {target}: no such file"
            if anchor and linked.suffix == ".md":
                assert anchor in headings(linked), f"{page.name} links to {target}: no heading"


def headings(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    titles = [line.lstrip("#").strip() for line in page.read_text().splitlines()
              if line.startswith("#")]  # fmt: skip
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
