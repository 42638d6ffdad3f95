"""The README's quick-look snippet runs and prints what it promises."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_quick_look_snippet_runs():
    text = README.read_text()
    section = text[text.index("## Quick look") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {})
    printed = out.getvalue()
    assert "outlier dims" in printed
    outlier, random_mean = map(float, re.search(r"outliers ([\d.]+), random dims ([\d.]+)", printed).groups())
    assert outlier < random_mean


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert [l.split()[0:2] for l in block] == [["make", "reproduce"], ["make", "test"]]
    assert "make test" in (README.parent / ".ci" / "run").read_text()
