"""The settings that move Keel past one machine: which backend they select, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from keel.settings import Settings
from stores.checkpoints import redact_url


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(home=tmp_path, _env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_the_embedded_backends_are_the_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.backend == "sqlite"
    assert settings.chroma_url is None


def test_a_postgres_url_selects_postgres_and_stays_secret(tmp_path: Path) -> None:
    settings = _settings(tmp_path, postgres_url="postgresql://keel:pw@db:5432/keel")
    assert settings.backend == "postgres"
    assert "pw" not in repr(settings)


def test_the_environment_switches_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_POSTGRES_URL", "postgresql://keel@db/keel")
    monkeypatch.setenv("KEEL_CHROMA_URL", "http://chroma:8000/")
    settings = _settings(tmp_path)
    assert settings.backend == "postgres"
    assert settings.chroma_url == "http://chroma:8000"


@pytest.mark.parametrize("url", ["chroma:8000", "ftp://chroma", "http://", "localhost"])
def test_a_chroma_url_that_is_not_http_is_refused_naming_the_setting(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ValidationError, match="KEEL_CHROMA_URL"):
        _settings(tmp_path, chroma_url=url)


def test_an_empty_chroma_url_means_embedded(tmp_path: Path) -> None:
    assert _settings(tmp_path, chroma_url="  ").chroma_url is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://keel:s3cret@db:5432/keel", "postgresql://keel:***@db:5432/keel"),
        ("postgresql://keel@db/keel", "postgresql://keel@db/keel"),
        ("host=db user=keel password=s3cret", "host=db user=keel password=***"),
    ],
)
def test_messages_never_show_the_database_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_approval_key_setting_is_checked_and_never_echoed(tmp_path: Path) -> None:
    key = "a1" * 32
    assert _settings(tmp_path, approval_key=key.upper()).approval_signing_key() == bytes.fromhex(
        key
    )
    assert key not in repr(_settings(tmp_path, approval_key=key))
    for bad, says in (("a1" * 16, "it has 32"), ("g" * 64, "0-9, a-f")):
        with pytest.raises(ValidationError) as caught:
            _settings(tmp_path, approval_key=bad)
        assert "KEEL_APPROVAL_KEY must be 64 hex characters" in str(caught.value)
        assert says in str(caught.value) and bad not in str(caught.value)
    secret = tmp_path / "secret"
    with pytest.raises(ValidationError, match=r"KEEL_APPROVAL_KEY_FILE=.*cannot read it"):
        _settings(tmp_path, approval_key_file=secret)
    secret.write_text("short\n")
    with pytest.raises(ValidationError, match=r"KEEL_APPROVAL_KEY_FILE=.* must be 64 hex"):
        _settings(tmp_path, approval_key_file=secret)
    secret.write_text(key + "\n")
    assert _settings(tmp_path, approval_key_file=secret).approval_signing_key() == bytes.fromhex(
        key
    )
    with pytest.raises(ValidationError, match="not both"):
        _settings(tmp_path, approval_key=key, approval_key_file=secret)
