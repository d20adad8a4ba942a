"""The verdict-signing key and signatures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.errors import ConfigError
from pipelines.keys import sign, signing_key, verify_signature
from pipelines.settings import load_settings


def test_the_key_is_created_once_0600_and_signs(tmp_path: Path) -> None:
    settings = load_settings({"SHOPML_HOME": str(tmp_path / "home")})
    with pytest.raises(ConfigError, match="no signing key at"):
        signing_key(settings)
    key = signing_key(settings, create=True)
    assert settings.signing_key_file.stat().st_mode & 0o777 == 0o600
    assert signing_key(settings, create=True) == key  # not replaced
    signature = sign(b'{"blessed": true}', key)
    assert verify_signature(b'{"blessed": true}', signature, key)
    assert not verify_signature(b'{"blessed": false}', signature, key)
    assert not verify_signature(
        b'{"blessed": true}', signature, b"another key of 32 bytes or more!!"
    )


def test_a_key_others_can_read_or_a_short_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    settings = replace(load_settings({"SHOPML_HOME": str(tmp_path)}), signing_key_file=path)
    path.write_text("x" * 64)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        signing_key(settings)
    path.chmod(0o600)
    assert signing_key(settings) == b"x" * 64
    path.write_text("short")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        signing_key(settings)
