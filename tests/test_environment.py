"""environment.yml stays in step with the pip pins of requirements.txt."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _pins(lines):
    return {line.strip().lstrip("- ").strip() for line in lines if "==" in line and not line.strip().startswith("#")}


def test_environment_yml_matches_requirements():
    req = _pins((REPO / "requirements.txt").read_text().splitlines())
    env_lines = (REPO / "environment.yml").read_text().splitlines()
    env = _pins(env_lines[env_lines.index("  - pip:") :])
    assert env == req | {"torch==2.13.0"}
    assert "python=3.11" in (REPO / "environment.yml").read_text()


def test_torch_is_pinned_and_installed_first():
    makefile = (REPO / "Makefile").read_text()
    assert makefile.index("torch==2.13.0") < makefile.index("-r requirements.txt")
    assert "torch" not in (REPO / "requirements.txt").read_text().split("FIRST")[1]
