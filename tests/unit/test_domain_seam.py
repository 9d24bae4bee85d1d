"""The one seam: ``KEEL_DOMAIN`` picks the domain, checked at start-up, and the domain's folder
supplies its corpus, manifest and scenarios."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from domains.support_desk import CORPUS, MANIFEST, SCENARIOS, SupportDesk
from graph.domain import Domain, Showcase, load_domain
from keel.errors import ConfigError
from keel.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_the_default_domain_is_the_support_desk_and_brings_its_folder(tmp_path: Path) -> None:
    settings = _settings(home=tmp_path)
    assert settings.corpus_dir == CORPUS
    assert settings.policy_file == MANIFEST
    assert settings.scenarios_dir == SCENARIOS
    assert settings.domain_db == tmp_path / "support_desk.sqlite"
    assert settings.collection == "keel-corpus-domains-support_desk-SupportDesk"
    domain = load_domain(settings.domain)
    assert isinstance(domain, SupportDesk)
    assert domain.subject_keys == {"customer_id", "invoice_id", "ticket_id"}


def test_two_domains_in_one_home_keep_their_own_index(tmp_path: Path) -> None:
    """An ingest for one domain never replaces another's corpus in the same home or server."""
    desk = _settings(home=tmp_path)
    incidents = _settings(home=tmp_path, domain="domains.incident_desk:IncidentDesk")
    assert desk.collection != incidents.collection
    # Two spellings of two modules whose last parts agree still name two collections.
    spelled = _settings(home=tmp_path, domain="domains.support_desk.domain:SupportDesk")
    other = _settings(home=tmp_path, domain="domains.incident_desk.domain:IncidentDesk")
    assert spelled.collection != other.collection
    assert _settings(home=tmp_path, collection="mine").collection == "mine"


def test_explicit_corpus_and_manifest_win_over_the_domains(tmp_path: Path) -> None:
    settings = _settings(home=tmp_path, corpus_dir=tmp_path / "c", policy_file=tmp_path / "m.yaml")
    assert (settings.corpus_dir, settings.policy_file) == (tmp_path / "c", tmp_path / "m.yaml")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("domains.support_desk", "package.module:attribute"),
        ("no_such_package.desk:Desk", "no module 'no_such_package.desk'"),
        ("domains.support_desk:Nothing", "no attribute 'Nothing'"),
        ("domains.support_desk:CORPUS", "is not a Domain"),
    ],
)
def test_a_bad_domain_setting_is_one_error_naming_the_setting(
    tmp_path: Path, spec: str, says: str
) -> None:
    try:
        load_domain(_settings(home=tmp_path, domain=spec).domain)
    except (ValidationError, ConfigError) as err:
        message = str(err)
    else:
        pytest.fail(f"{spec} loaded")
    assert "KEEL_DOMAIN" in message and says in message


def test_a_domain_module_anywhere_on_the_path_loads_and_an_incomplete_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "half_desk.py").write_text(
        "class Half:\n    name = 'half'\n    def prepare(self, settings, *, reset=False): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = _settings(home=tmp_path, domain="half_desk:Half")
    assert settings.corpus_dir == tmp_path / "corpus"  # the module's own folder
    with pytest.raises(ConfigError, match=r"KEEL_DOMAIN=half_desk:Half: Half is not a Domain"):
        load_domain(settings.domain)
    sys.modules.pop("half_desk", None)


def test_the_support_desk_has_every_member_the_protocol_names() -> None:
    desk: Showcase = SupportDesk()  # mypy checks the shape; this checks the names at run time
    members = [
        n
        for protocol in (Domain, Showcase)
        for n in (*protocol.__annotations__, *vars(protocol))
        if not n.startswith("_")
    ]
    assert all(hasattr(desk, n) for n in members)
    assert {"commands", "demo_requests", "planner_role", "subject_keys"} <= set(members)
    assert set(desk.commands()) == {"settle"}
    assert [r.then for r in desk.demo_requests() if r.then] == ["settle"]
