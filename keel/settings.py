"""Keel's settings: one validated place, read from the environment (prefix ``KEEL_``) and ``.env``.

Nothing deeper in the code reads ``os.environ``; a ``Settings`` object is passed in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agents.usage import BudgetRule, Price

DEFAULT_DOMAIN = "domains.support_desk:SupportDesk"
"""The example domain Keel runs when ``KEEL_DOMAIN`` is not set."""

_DOMAIN_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def domain_folder(spec: str) -> Path:
    """The folder of the module a ``package.module:attribute`` domain setting names.

    A domain is one folder: its corpus (``corpus/``), permission manifest (``permissions.yaml``)
    and eval scenarios (``scenarios/``) live there by convention. The module is located, not
    imported (only its parent packages are), so settings stay cheap to build.

    Raises:
        ValueError: the setting is malformed or names no module (the message names
            ``KEEL_DOMAIN``).

    Example:
        >>> domain_folder("domains.support_desk:SupportDesk").name
        'support_desk'
    """
    if not _DOMAIN_SPEC.match(spec):
        raise ValueError(
            f"KEEL_DOMAIN={spec!r} is not of the form package.module:attribute,"
            f" e.g. {DEFAULT_DOMAIN}"
        )
    module = spec.split(":", 1)[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin is None:
        raise ValueError(f"KEEL_DOMAIN={spec!r}: no module {module!r} can be found")
    return Path(found.origin).resolve().parent


ApiRole = Literal["requester", "reviewer", "operator"]
"""What a user of the engine may do (docs/serving.md): a requester starts threads and
answers them with ``command.resume``; a reviewer reads the team's threads and answers approvals;
an operator may do everything, state writes and forks included."""

API_ROLES: tuple[ApiRole, ...] = ("requester", "reviewer", "operator")
DEFAULT_API_ROLES: frozenset[ApiRole] = frozenset({"requester", "reviewer"})
"""The roles of a ``user=token`` pair that names none (what every user could do before roles)."""

MIN_API_TOKEN_CHARS = 8
_API_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class ApiUser:
    """A user of the engine: the person a token names and the roles it holds."""

    name: str
    roles: frozenset[ApiRole]

    def can(self, role: ApiRole) -> bool:
        """Whether the user holds ``role``; an operator holds every role."""
        return role in self.roles or "operator" in self.roles


def parse_api_tokens(raw: str) -> dict[str, ApiUser]:
    """``KEEL_API_TOKENS`` as {token: user}: ``user=TOKEN[:role+role]`` pairs separated by commas.

    A pair without roles is a requester and reviewer. Tokens are at least 8 characters, with no
    ``,``, ``:`` or white space, and unique; user names are unique. The error names the setting
    and the user, never a token.

    Raises:
        ValueError: the setting is malformed (one line, starting with ``KEEL_API_TOKENS``).

    Example:
        >>> users = parse_api_tokens("alice=s3cret-a1:requester, olga=s3cret-o1:operator")
        >>> users["s3cret-a1"].name, sorted(users["s3cret-o1"].roles)
        ('alice', ['operator'])
        >>> sorted(parse_api_tokens("carl=s3cret-c1")["s3cret-c1"].roles)
        ['requester', 'reviewer']
    """
    users: dict[str, ApiUser] = {}
    names: set[str] = set()
    for index, pair in enumerate(filter(None, (p.strip() for p in raw.split(","))), start=1):
        name, sep, rest = (part.strip() for part in pair.partition("="))
        token, colon, role_text = (
            (part.strip() for part in rest.rpartition(":")) if (":" in rest) else (rest, "", "")
        )
        who = f"user {name!r}" if _API_USER.match(name) else f"pair {index}"
        if not sep or not _API_USER.match(name):
            raise ValueError(
                f"KEEL_API_TOKENS: {who} is not user=token[:roles] (a user name of letters, "
                "digits and ._@-, then =, then the token)"
            )
        if len(token) < MIN_API_TOKEN_CHARS or any(c.isspace() or c in ",:=" for c in token):
            raise ValueError(
                f"KEEL_API_TOKENS: the token of {who} must be at least {MIN_API_TOKEN_CHARS} "
                "characters with no white space, ',', ':' or '='"
            )
        roles: frozenset[ApiRole] = DEFAULT_API_ROLES
        if colon:
            named = [r.strip() for r in role_text.split("+")]
            unknown = [r for r in named if r not in API_ROLES]
            if not role_text or unknown:
                raise ValueError(
                    f"KEEL_API_TOKENS: {who} names unknown role(s) {unknown or [role_text]}; "
                    f"roles are {'+'.join(API_ROLES)} (e.g. alice=TOKEN:requester+reviewer)"
                )
            roles = frozenset(r for r in API_ROLES if r in named)
        if token in users:
            raise ValueError(f"KEEL_API_TOKENS: {users[token].name!r} and {who} share a token")
        if name in names:
            raise ValueError(f"KEEL_API_TOKENS: {who} is named twice")
        names.add(name)
        users[token] = ApiUser(name=name, roles=roles)
    return users


SIGNING_KEY_HEX_CHARS = 64
"""An approval key is 32 random bytes written as hex, as ``home/approval.key`` holds it."""


def _signing_key_text(text: str, where: str) -> str:
    """The key as 64 lowercase hex characters; the error names the setting, never the value.

    Example:
        >>> _signing_key_text("ab" * 31, "KEEL_APPROVAL_KEY")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: KEEL_APPROVAL_KEY must be 64 hex characters (32 bytes, ...); it has 62
    """
    key = text.strip().lower()
    if len(key) != SIGNING_KEY_HEX_CHARS:
        raise ValueError(
            f"{where} must be {SIGNING_KEY_HEX_CHARS} hex characters (32 bytes, e.g. "
            f"`openssl rand -hex 32`); it has {len(key)}"
        )
    if not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"{where} must be {SIGNING_KEY_HEX_CHARS} hex characters (0-9, a-f)")
    return key


def corpus_collection(domain: str) -> str:
    """The Chroma collection of a domain's corpus: named from the whole ``module:attribute``, so
    two domains (two spellings of two modules, two objects of one module) never share an index.

    Example:
        >>> corpus_collection("domains.support_desk:SupportDesk")
        'keel-corpus-domains-support_desk-SupportDesk'
        >>> corpus_collection("domains.support_desk.domain:SupportDesk") != corpus_collection(
        ...     "domains.incident_desk.domain:IncidentDesk")
        True
    """
    name = "keel-corpus-" + re.sub(r"[^A-Za-z0-9_]+", "-", domain).strip("-")
    if len(name) > 63:  # Chroma's limit on older servers; the hash keeps it one per domain
        name = name[:50] + "-" + hashlib.sha256(domain.encode()).hexdigest()[:12]
    return name


class Settings(BaseSettings):
    """Every knob Keel has, with the embedded, offline defaults.

    Example:
        >>> Settings(home=Path("/tmp/keel")).checkpoint_db
        PosixPath('/tmp/keel/checkpoints.sqlite')
    """

    # Errors never echo what was given: a bad KEEL_APPROVAL_KEY must not reach a log or a terminal.
    model_config = SettingsConfigDict(
        env_prefix="KEEL_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    home: Path = Field(default=Path(".keel"), description="Folder for every embedded store.")
    domain: str = Field(
        default=DEFAULT_DOMAIN,
        description="The domain Keel runs, as package.module:attribute (a Domain, or a class "
        "or factory that makes one with no arguments).",
    )
    corpus_dir: Path = Field(
        default=None,  # type: ignore[assignment]  # filled from the domain below
        description="Folder with the corpus's manifest.yaml (default: the domain's corpus/).",
    )
    collection: str = Field(
        default=None,  # type: ignore[assignment]  # filled from the domain below
        description="The corpus's Chroma collection (default: keel-corpus-<domain module>, so "
        "two domains in one home or on one Chroma server never share an index).",
    )
    domain_backend: Path | None = Field(
        default=None,
        description="The domain's backend file (default: HOME/<domain module>.sqlite).",
    )

    postgres_url: SecretStr | None = Field(
        default=None,
        description="A PostgreSQL URL: checkpoints go to Postgres instead of SQLite in home.",
    )
    postgres_pool_size: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Most connections one process keeps open: the checkpointer's pool, and the "
        "one pool Keel's own stores (intent ledger, inbox, budgets, flight record) share.",
    )
    postgres_behind_pooler: bool = Field(
        default=False,
        description="Behind a transaction pooler (PgBouncer): no server-side prepared statements.",
    )
    postgres_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Bounds each wait for Postgres: a connection, one from the pool, and the "
        "pool's reconnection attempts after an outage.",
    )
    api_tokens: SecretStr | None = Field(
        default=None,
        description="The engine's tokens (`make serve`, graph/serve_auth.py): user=TOKEN[:roles] "
        "pairs separated by commas, roles of requester, reviewer, operator joined by + (default "
        "requester+reviewer); the user is who the engine says ran a request. Checked at start-up: "
        "a malformed value stops every Keel process. A secret: set it in the environment or a "
        "secret store, never in the repo.",
    )
    api_team: str = Field(
        default="keel",
        min_length=1,
        description="The engine's tenant: every user of KEEL_API_TOKENS works in it and sees its "
        "threads (a reviewer answers an approval another user's run asked for).",
    )
    chroma_url: str | None = Field(
        default=None,
        description="A Chroma server (`chroma run`), e.g. http://127.0.0.1:8000; unset: embedded.",
    )

    embedding_backend: Literal["local", "torch", "openai"] = Field(
        default="local",
        description="local: all-MiniLM-L6-v2 int8 on onnxruntime (offline, no PyTorch); torch: "
        "the same model in float32 on sentence-transformers (the torch extra); openai: an "
        "OpenAI-compatible /v1/embeddings.",
    )
    embedding_model: str = "text-embedding-3-small"

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KEEL_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("KEEL_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    planner_model: str | None = Field(
        default=None, description="Chat model for the planner; unset means the runbook planner."
    )
    planner_fallback_model: str | None = None
    model_timeout_s: float = Field(default=30.0, gt=0)
    model_max_retries: int = Field(default=2, ge=0)
    plan_repair_attempts: int = Field(default=1, ge=0)

    # Costs (docs/budgets.md): a price table, and budgets enforced before each call.
    user: str = Field(
        default="local", min_length=1,
        description="Who runs models from this shell: the user budgets charge when no serving "
        "engine authenticated one (the team is KEEL_API_TEAM).",
    )  # fmt: skip
    model_prices: Annotated[dict[str, Price], NoDecode] = Field(
        default_factory=dict,
        description='Dollars per million tokens per model, JSON or YAML: {"gpt-4o-mini": '
        '{"input": 0.15, "output": 0.6}}.',
    )
    unknown_model_price: Annotated[Price | None, NoDecode] = Field(
        default=None,
        description="The price assumed for a model missing from KEEL_MODEL_PRICES. Unset: such a "
        "model's calls count tokens only, and a budget in money refuses them.",
    )
    budgets: Annotated[list[BudgetRule], NoDecode] = Field(
        default_factory=list,
        description='Budgets, JSON or YAML: [{"scope": "team", "period": "day", "tokens": '
        '200000, "cost_usd": 5}, {"scope": "thread", "calls": 12}]; scope thread, user or team, '
        "period lifetime, day or month (UTC), name: one of them (unset: each).",
    )
    model_max_tokens: int = Field(
        default=2048, ge=1, description="Most output tokens per model call (its reservation)."
    )
    budget_reservation_ttl_s: float = Field(
        default=600.0, gt=0,
        description="A reservation not settled after this long is a dead worker's: it expires, "
        "counted at its reservation. Keep it above the model's timeout times its tries.",
    )  # fmt: skip
    budget_exhausted: Literal["runbook", "escalate"] = Field(
        default="runbook",
        description="When a budget refuses the planner's model: plan with the free runbook "
        "planner where that is safe (nothing done yet), or always escalate.",
    )

    retrieval_k: int = Field(default=6, ge=1, le=50)
    hybrid_retrieval: bool = Field(
        default=False, description="Mix BM25 into the ranking (measured in docs/retrieval.md)."
    )
    planner_lookups: int | None = Field(
        default=None,
        ge=0,
        description="How many read-only look-ups the model planner may make before it plans "
        "(default: the domain's own planner_lookups, else 0).",
    )
    planner_budget_tokens: int = Field(
        default=4000, ge=500, description="Token budget of one planner prompt (approximate)."
    )
    memory_budget_tokens: int = Field(
        default=600, ge=50, description="Token budget of the working-memory section."
    )
    max_replans: int = Field(default=2, ge=0, le=10)
    max_request_chars: int = Field(default=2000, ge=10)
    recursion_limit: int = Field(default=200, ge=10)
    tool_timeout_s: float = Field(default=2.0, gt=0, description="Per attempt of a tool call.")
    tool_retry_attempts: int = Field(
        default=6, ge=1, le=20, description="Tries per call for infrastructure faults."
    )
    faults: str = Field(
        default="none", description="Fault profile for the domain's integrations (name or JSON)."
    )
    fault_seed: int = 0
    lease_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="A run's lease is dead when its heartbeat (every third of this) is older; a "
        "dead worker on the same machine is seen at once, by its pid.",
    )
    approval_ttl_s: int = Field(default=24 * 3600, ge=60)
    approval_key: SecretStr | None = Field(
        default=None,
        description="The key that signs approval receipts: 64 hex characters (32 bytes, "
        "`openssl rand -hex 32`), the same on every worker. Unset: HOME/approval.key, made on "
        "first use (one machine only; refused with KEEL_POSTGRES_URL).",
    )
    approval_key_file: Path | None = Field(
        default=None,
        description="A file holding that key (a mounted secret), instead of KEEL_APPROVAL_KEY.",
    )
    reviewer: str = Field(default="operator", description="Who approves from this shell.")
    policy_file: Path = Field(
        default=None,  # type: ignore[assignment]  # filled from the domain below
        description="The permission manifest; no manifest, no calls (default: the domain's "
        "permissions.yaml).",
    )
    record: bool = Field(default=True, description="Keep the flight recorder on.")
    record_sync: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite flight record: NORMAL survives a killed process and loses at most "
        "the last events to a power cut; FULL also syncs the disk on every event.",
    )
    sensitive_fields: list[str] = Field(
        default_factory=lambda: ["api_key", "authorization", "password", "secret", "token"],
        description="Fields redacted before anything is recorded or traced.",
    )
    sensitive_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions: every match, in any string recorded or traced, is "
        "redacted (free text included). Opt-in; docs/observability.md shows one for e-mail "
        "addresses.",
    )

    @model_validator(mode="before")
    @classmethod
    def _domain_defaults(cls, data: Any) -> Any:
        """The corpus and the manifest default to the domain's own (the setting is checked here,
        at start-up: a domain that cannot be found is one error naming KEEL_DOMAIN)."""
        if not isinstance(data, dict):
            return data
        folder = domain_folder(str(data.get("domain") or DEFAULT_DOMAIN))
        if data.get("corpus_dir") is None:
            data["corpus_dir"] = folder / "corpus"
        if data.get("policy_file") is None:
            data["policy_file"] = folder / "permissions.yaml"
        if data.get("collection") is None:
            data["collection"] = corpus_collection(str(data.get("domain") or DEFAULT_DOMAIN))
        return data

    @field_validator("home", "corpus_dir", "policy_file")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("model_prices", "unknown_model_price", "budgets", mode="before")
    @classmethod
    def _json_or_yaml(cls, value: Any) -> Any:
        """Prices and budgets from the environment: JSON, or YAML (a superset of it)."""
        if isinstance(value, str):
            try:
                return yaml.safe_load(value) if value.strip() else None
            except yaml.YAMLError as err:
                raise ValueError(f"neither JSON nor YAML: {err}") from None
        return value

    @field_validator("sensitive_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                raise ValueError(
                    f"KEEL_SENSITIVE_PATTERNS: {pattern!r} is not a regular expression ({err})"
                ) from err
            if compiled.fullmatch(""):
                raise ValueError(
                    f"KEEL_SENSITIVE_PATTERNS: {pattern!r} matches the empty string"
                    " (it would match everywhere)"
                )
        return value

    @field_validator("api_tokens")
    @classmethod
    def _api_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_tokens(value.get_secret_value())
        return value

    def api_users(self) -> dict[str, ApiUser]:
        """``KEEL_API_TOKENS`` as {token: user} (empty when unset: the engine refuses everyone)."""
        return (
            {} if self.api_tokens is None else parse_api_tokens(self.api_tokens.get_secret_value())
        )

    @field_validator("approval_key")
    @classmethod
    def _approval_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        return SecretStr(_signing_key_text(value.get_secret_value(), "KEEL_APPROVAL_KEY"))

    @model_validator(mode="after")
    def _one_signing_key(self) -> Settings:
        if self.approval_key is not None and self.approval_key_file is not None:
            raise ValueError("set KEEL_APPROVAL_KEY or KEEL_APPROVAL_KEY_FILE, not both")
        self.approval_signing_key()  # a missing or malformed key file is refused here, at start
        return self

    def approval_signing_key(self) -> bytes | None:
        """The receipts' key from ``KEEL_APPROVAL_KEY`` or ``KEEL_APPROVAL_KEY_FILE``; None when
        neither is set (the key file in ``home`` is used then).

        Raises:
            ValueError: the key file cannot be read or does not hold 64 hex characters.
        """
        if self.approval_key is not None:
            return bytes.fromhex(self.approval_key.get_secret_value())
        if self.approval_key_file is None:
            return None
        where = f"KEEL_APPROVAL_KEY_FILE={self.approval_key_file}"
        try:
            text = self.approval_key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: cannot read it ({type(err).__name__})") from None
        return bytes.fromhex(_signing_key_text(text, where))

    @field_validator("chroma_url")
    @classmethod
    def _chroma_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = urlparse(value.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"KEEL_CHROMA_URL={value!r} is not an http(s) URL such as http://127.0.0.1:8000"
            )
        return value.strip().rstrip("/")

    @property
    def backend(self) -> Literal["sqlite", "postgres"]:
        """Which backend keeps the durable stores (``stores.backends.open_stores``): Postgres when
        a URL is set. The one place that asks."""
        return "sqlite" if self.postgres_url is None else "postgres"

    @property
    def checkpoint_db(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def domain_dir(self) -> Path:
        """The domain's folder (its corpus, manifest and scenarios live there)."""
        return domain_folder(self.domain)

    @property
    def domain_db(self) -> Path:
        """The domain's backend file, one per domain in a home (two domains never share one)."""
        module = self.domain.split(":", 1)[0].rsplit(".", 1)[-1]
        return self.domain_backend or self.home / f"{module}.sqlite"

    @property
    def scenarios_dir(self) -> Path:
        """The domain's eval scenarios (``scenarios/`` in its folder)."""
        return self.domain_dir / "scenarios"

    @property
    def intent_db(self) -> Path:
        return self.home / "intents.sqlite"

    @property
    def budgets_db(self) -> Path:
        """Model calls' reservations and spend, and the budgets' running totals."""
        return self.home / "budgets.sqlite"

    @property
    def events_db(self) -> Path:
        """The event inbox: who waits for which domain event, how far the relay has read."""
        return self.home / "events.sqlite"

    @property
    def breaker_db(self) -> Path:
        """Circuit breaker state, shared by every process using this home."""
        return self.home / "breakers.sqlite"

    @property
    def records_db(self) -> Path:
        """The flight recorder, next to the checkpoints."""
        return self.home / "records.sqlite"

    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma"

    @property
    def model_configured(self) -> bool:
        """A planner model is named and something can answer it (a key or a local server)."""
        return self.planner_model is not None and (
            self.openai_api_key is not None or self.openai_base_url is not None
        )
