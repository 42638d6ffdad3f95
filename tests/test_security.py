"""Security: no remote code, safetensors by default, the browser test's server bound to 127.0.0.1 with a token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bertbusters_nb.model import loading

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "bertbusters_nb"


def test_the_package_never_turns_on_trust_remote_code():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for p in sources
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"trust_remote_code['\"]?\s*[=:]\s*(?!False\b)\S", line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, f"trust_remote_code is passed (set or forwarded) at {offenders}"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("allow_pickle, expected", [(False, True), (True, None)])
def test_load_model_asks_for_safetensors_unless_pickle_is_allowed(monkeypatch, tmp_path, allow_pickle, expected):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    seen = {}

    class FakeAuto:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.update(kwargs)
            raise _Stop

    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda source, **kw: seen.update(tok=kw))
    monkeypatch.setattr(loading, "_AUTO", {name: FakeAuto for name in loading._AUTO})
    with pytest.raises(_Stop):
        loading.load_model(tmp_path, head="mlm", allow_pickle=allow_pickle)
    assert seen["use_safetensors"] is expected
    assert "trust_remote_code" not in seen and "trust_remote_code" not in seen["tok"]


def test_pickle_only_folder_is_refused_with_the_risk_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(loading.ModelLoadError, match="(?s)arbitrary code.*allow_pickle=True"):
        loading.load_model(tmp_path)


def test_browser_test_server_listens_on_localhost_with_a_token():
    source = (REPO / "tests" / "test_browser.py").read_text()
    assert '"--ServerApp.ip=127.0.0.1"' in source
    assert 'f"--IdentityProvider.token={token}"' in source
    assert "token, port = uuid.uuid4().hex, _free_port()" in source  # a fresh random token per run
    assert not re.search(r"ServerApp\.ip=(0\.0\.0\.0|\*|'')|token=''|token=\"\"|disable_check_xsrf", source)
    assert 'headers={"Authorization": f"token {token}"}' in source  # the test itself authenticates
