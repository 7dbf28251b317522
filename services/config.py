"""Configuration from environment variables (PLATELETWATCH_*) and an optional TOML file.

Precedence, highest first: environment, the file named by PLATELETWATCH_CONFIG_FILE, defaults.
`KAFKA_BOOTSTRAP_SERVERS` is also honoured without the prefix, as every Kafka tool does.
The YAML files services read (rules, treatment codes, escalation policy) go through one loader,
`load_yaml_model`.
"""

import os
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas import Topic
from services.timezones import ZoneName

CONFIG_FILE_ENV = "PLATELETWATCH_CONFIG_FILE"

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigurationError(Exception):
    """Something the operator must fix before the service can start; printed, not a traceback."""


def load_yaml_model(model: type[ModelT], source: Path | Traversable) -> ModelT:
    """The YAML file `source` (a path, or a file shipped in a package) read as `model`.

    Raises OSError when it cannot be read, yaml.YAMLError when it is not YAML and pydantic's
    ValidationError when it does not fit the model: callers say which file was unusable.
    """
    return model.model_validate(yaml.safe_load(source.read_text(encoding="utf-8")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PLATELETWATCH_", extra="forbid", validate_by_name=True
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "PLATELETWATCH_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="host:port[,host:port]; unset means testcontainers Kafka or embedded Tansu.",
    )
    broker: Literal["kafka", "tansu"] | None = Field(
        default=None,
        description="Without KAFKA_BOOTSTRAP_SERVERS and Docker, the broker `run` starts: "
        "Apache Kafka from the jars `make tools` fetched, or embedded Tansu (unset).",
    )
    partitions: int = Field(
        default=6, ge=1, description="Partitions of every patient-keyed topic and changelog."
    )
    replication_factor: int = Field(default=1, ge=1)
    kafka_produce_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How long a write may wait for acks=all before the sender is told 503/AE.",
    )
    topic_prefix: str = Field(
        default="", description="Namespace for topics and consumer groups (tests, shared clusters)."
    )

    bind_host: str = "127.0.0.1"
    ingest_port: int = 8410
    classifier_port: int = 8411
    notifier_port: int = 8412
    demo_receiver_port: int = 8419

    ingest_mllp_port: int = Field(default=2575, description="HL7 v2 over MLLP (TCP).")
    ingest_mllp_max_message_bytes: int = Field(default=1_048_576, ge=1024)
    ingest_mllp_idle_timeout_seconds: float = Field(
        default=60.0, gt=0, description="A connection silent this long is closed."
    )
    ingest_mllp_frame_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A frame started but not finished within this long closes its connection.",
    )
    ingest_mllp_max_connections: int = Field(
        default=64,
        ge=1,
        description="Open MLLP connections at most; more are accepted and closed at once. "
        "Bounds memory: at most this many frames of ingest_mllp_max_message_bytes are held.",
    )
    ingest_http_max_body_bytes: int = Field(
        default=10_485_760,
        ge=1024,
        description="Largest HTTP body the feeds read; a larger one is refused with 413.",
    )
    ingest_api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens accepted by the HTTP feeds (JSON list); none means refuse all.",
    )
    local_timezone: ZoneName = Field(
        default="UTC",
        validation_alias=AliasChoices(
            "PLATELETWATCH_LOCAL_TIMEZONE", "PLATELETWATCH_INGEST_LOCAL_TIMEZONE"
        ),
        description="The deployment's IANA zone, e.g. Europe/Paris: ingest reads times sent "
        "without an offset in it, and pages and the console show every time in it, with its "
        "offset. PLATELETWATCH_INGEST_LOCAL_TIMEZONE, its former name, is still read.",
    )
    ingest_local_platelet_codes: list[str] = Field(
        default_factory=list,
        description='Local codes that mean "platelet count", as "SYSTEM|CODE" (e.g. "99LAB|PLT").',
    )
    ingest_fhir_reference_authority: str | None = Field(
        default=None,
        description="Authority for FHIR subjects given only as Patient/<id> (the EHR's own ids).",
    )
    ingest_treatment_table_file: Path | None = Field(
        default=None, description="Treatment codes YAML; unset means the table shipped with ingest."
    )

    classifier_rules_file: Path | None = Field(
        default=None,
        description="Rules YAML; unset means the defaults shipped with the classifier.",
    )
    classifier_state_limit_bytes: int = Field(
        default=512_000,
        ge=10_000,
        le=900_000,  # the record's key and framing must fit beside it under Kafka's 1 MB
        description="Largest changelog record one patient's history may take; keep it below the "
        "changelog topic's max.message.bytes (Kafka's default is about 1 MB). An event that "
        "would grow a history past it is dead-lettered.",
    )
    classifier_session_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Consumer-group session and rebalance timeout; bounds how long a join takes.",
    )
    classifier_fetch_max_wait_seconds: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="Longest the classifier's consumer lets the broker hold a fetch with no new "
        "records. A broker that answers a waiting fetch only when this runs out (embedded Tansu) "
        "makes it the floor of result-to-page latency: with the faust classifier's fixed 1.5 s "
        "(and the notifier's 0.5 s) an idle pipeline paged in 312-357 ms p50, with 50 ms each in "
        "50-54 ms "
        "(benchmarks/result_to_page.py). Apache Kafka answers as soon as records arrive, so a "
        "short wait only costs polls of an idle broker (20 a second at 50 ms, a few hundred bytes "
        "each).",
    )

    notifier_database_url: str = "sqlite+aiosqlite:///.plateletwatch/notifier.sqlite3"
    notifier_webhook_url: HttpUrl | None = Field(
        default=None,
        description="Where pages go; `plateletwatch run` points it at the demo receiver.",
    )
    notifier_roster_file: Path | None = Field(
        default=None,
        description="The on-call roster (YAML, may name iCal feeds); without one, every tier "
        "is the webhook above.",
    )
    notifier_escalation_file: Path | None = Field(
        default=None, description="Escalation chains per alert kind; default: the shipped policy."
    )
    notifier_fetch_max_wait_seconds: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="Longest the notifier's alert consumer lets the broker hold a fetch with no "
        "new alerts: on embedded Tansu, which does not answer a waiting fetch early, the floor "
        "of alert-to-page latency (aiokafka's own default is 500 ms); on Apache Kafka only the "
        "pace of polls while idle, as for classifier_fetch_max_wait_seconds.",
    )
    notifier_escalation_interval_seconds: float = Field(default=5.0, gt=0)
    notifier_link_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for the action links in pages, the one that signs: the first of "
        "notifier_link_secrets; unset with them, a random one per process (links then stop "
        "working when the notifier restarts).",
    )
    notifier_link_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="HMAC keys for action links (JSON list), after notifier_link_secret if set: "
        "the first signs, any is accepted; to rotate, put a new key first and drop the old one "
        "once its links have expired.",
    )
    notifier_public_url: str | None = Field(
        default=None,
        description="Where people reach the notifier, for links; default http://HOST:PORT.",
    )
    notifier_link_valid_hours: float = Field(default=24.0, gt=0)
    notifier_api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens for POST /v1/alerts/{id}/actions (JSON list); none: refuse all.",
    )
    notifier_console_users_file: Path | None = Field(
        default=None,
        description="Console users (YAML: name, services, password_hash); unset, the board "
        "admits nobody.",
    )
    notifier_console_proxy_user_header: str | None = Field(
        default=None,
        description="Trust this header (set by an authenticating reverse proxy) for the "
        "console user's name instead of passwords; only where nothing else reaches the notifier.",
    )
    notifier_show_birth_date: bool = Field(
        default=False,
        description="Show the patient's birth date beside their identifier on the alert page "
        "and the board (a second identifier, where the hospital's policy allows it).",
    )
    notifier_session_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for console session cookies, never a link key, the one that "
        "signs: the first of notifier_session_secrets; unset with them, a random one per "
        "process (sessions then end when the notifier restarts).",
    )
    notifier_session_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="HMAC keys for console sessions (JSON list), after notifier_session_secret "
        "if set: the first signs, any is accepted, as for the link keys.",
    )
    notifier_console_session_hours: float = Field(default=12.0, gt=0)
    notifier_console_refresh_seconds: float = Field(default=30.0, gt=0)
    notifier_smtp_host: str | None = Field(
        default=None, description="Mail server for the e-mail channel; unset, no e-mail channel."
    )
    notifier_smtp_port: int = Field(default=25, gt=0, lt=65536)
    notifier_smtp_security: Literal["none", "starttls", "tls"] = "none"
    notifier_smtp_username: str | None = None
    notifier_smtp_password: SecretStr | None = None
    notifier_smtp_sender: str = "plateletwatch@localhost"
    notifier_webhook_secret: SecretStr | None = Field(
        default=None, description="Signs each webhook request (X-PlateletWatch-Signature)."
    )
    notifier_pagerduty_events_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="PagerDuty Events API v2, for people with channel: pagerduty.",
    )
    notifier_sms_gateway_url: str | None = Field(
        default=None, description="SMS/pager gateway for people with channel: sms; unset, none."
    )
    notifier_sms_gateway_token: SecretStr | None = None
    notifier_webhook_full_alert: bool = Field(
        default=True,
        description="Webhooks get the whole alert (evidence, date of birth); false: the summary, "
        "links and ids only, for receivers that must not hold more.",
    )
    notifier_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    notifier_delivery_attempts: int = Field(default=4, ge=1)
    notifier_retry_base_seconds: float = Field(default=1.0, gt=0)

    api_docs: bool = Field(
        default=False,
        description="Serve /docs, /redoc and /openapi.json on the HTTP services (a map of "
        "every route for anyone who can reach them): for development and demos.",
    )
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _former_zone_name(cls, values: Any) -> Any:
        """A config file may still say ingest_local_timezone, the setting's former name."""
        if isinstance(values, dict) and "ingest_local_timezone" in values:
            values = dict(values)
            former = values.pop("ingest_local_timezone")
            if not any(k in values for k in ("local_timezone", "PLATELETWATCH_LOCAL_TIMEZONE")):
                values["local_timezone"] = former
        return values

    @field_validator("ingest_local_platelet_codes")
    @classmethod
    def _system_and_code(cls, codes: list[str]) -> list[str]:
        for entry in codes:
            if entry.count("|") != 1 or not all(entry.split("|")):
                raise ValueError(f"local platelet code {entry!r} is not SYSTEM|CODE")
        return codes

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get(CONFIG_FILE_ENV)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_ENV}={config_file} is not a readable file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def local_zone(self) -> ZoneInfo:
        """`local_timezone` as a zone (checked when the settings were read)."""
        return ZoneInfo(self.local_timezone)

    @property
    def local_platelet_codes(self) -> frozenset[tuple[str, str]]:
        """`ingest_local_platelet_codes` as (system, code) pairs."""
        pairs = (entry.split("|") for entry in self.ingest_local_platelet_codes)
        return frozenset((system, code) for system, code in pairs)

    @property
    def notifier_link_keys(self) -> list[bytes]:
        """The configured link keys, the signing one first; none configured: empty."""
        return _keys(self.notifier_link_secret, self.notifier_link_secrets)

    @property
    def notifier_session_keys(self) -> list[bytes]:
        """The configured session keys, the signing one first; none configured: empty."""
        return _keys(self.notifier_session_secret, self.notifier_session_secrets)

    def topic(self, topic: Topic) -> str:
        """The physical topic name for a contract topic, within this deployment's namespace."""
        return f"{self.topic_prefix}{topic.value}"

    def group_id(self, service: str) -> str:
        """Consumer group of a service, within this deployment's namespace."""
        return f"{self.topic_prefix}plateletwatch-{service}"


def _keys(first: SecretStr | None, rest: list[SecretStr]) -> list[bytes]:
    return [key.get_secret_value().encode() for key in ([first] if first else []) + rest]
