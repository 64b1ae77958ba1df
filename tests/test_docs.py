"""The operations guide documents every environment variable the code reads."""

import re

from kernel.components import DEFAULT_PORTS
from kernel.settings import ROOT


def _code_variables() -> set[str]:
    settings = (ROOT / "kernel" / "settings.py").read_text()
    names = set(re.findall(r"#\s+([A-Z][A-Z0-9_]{2,})\b", settings))
    names |= {f"{name.upper()}_PORT" for name in DEFAULT_PORTS}
    gateway = (ROOT / "gateway" / "config.py").read_text()
    names |= set(re.findall(r'"(GATEWAY_[A-Z_]+)"', gateway))
    return names


def test_every_environment_variable_is_documented():
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "operations.md").read_text()))
    missing = _code_variables() - documented
    assert not missing, f"docs/operations.md does not document {sorted(missing)}"
