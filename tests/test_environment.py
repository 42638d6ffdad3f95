"""Set-up and schedule: environment.yml matches requirements.txt, torch installs first, `make test` steals work."""

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


class _Item:
    def __init__(self, name: str, slow: bool):
        self.name, self.slow = name, slow

    def get_closest_marker(self, name: str):
        return object() if name == "slow" and self.slow else None


def test_make_test_steals_work_and_collects_the_slow_tests_first(request):
    """The schedule that keeps both xdist workers busy to the end (benchmarks/RESULTS.md, CI's test schedule)."""
    from conftest import pytest_collection_modifyitems

    test_line = next(line for line in (REPO / "Makefile").read_text().splitlines() if "-m pytest" in line)
    assert "--dist worksteal" in test_line
    items = [_Item("a", False), _Item("b", True), _Item("c", False), _Item("d", True)]
    pytest_collection_modifyitems(request.config, items)
    assert [i.name for i in items] == ["b", "d", "a", "c"]  # slow first, each group in collection order
    slow = [item.get_closest_marker("slow") is not None for item in request.session.items]
    assert slow == sorted(slow, reverse=True), "a test marked slow is collected after a quick one"
