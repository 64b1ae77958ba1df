"""The gateway's configuration: the shared component settings plus its own GATEWAY_* variables."""

import os
from dataclasses import dataclass, field

from kernel.components import SERVICES
from kernel.settings import ROOT, Settings

BACKENDS = SERVICES  # the *_ADDR variables, in routing priority order


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _names(name: str) -> tuple[str, ...]:
    """A comma list, blanks dropped."""
    return tuple(item.strip() for item in _env(name, "").split(",") if item.strip())


def _number(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"  # HOST
    port: int = 8080  # GATEWAY_PORT
    backends: dict[str, str] = field(default_factory=dict)  # AUTH_ADDR, BOOKS_ADDR, ...: every gRPC service
    default_timeout_seconds: float = 30.0  # GATEWAY_DEFAULT_TIMEOUT_SECONDS: deadline when no Grpc-Timeout
    max_timeout_seconds: float = 300.0  # GATEWAY_MAX_TIMEOUT_SECONDS: a longer Grpc-Timeout is cut to this
    cors_origins: tuple[str, ...] = ()  # GATEWAY_CORS_ORIGINS: comma list, or "*"; empty means no CORS
    max_body_bytes: int = 4 * 1024 * 1024  # GATEWAY_MAX_BODY_BYTES: larger bodies get 413
    body_timeout_seconds: float = 30.0  # GATEWAY_BODY_TIMEOUT_SECONDS: a body slower to arrive gets 408
    rediscover_seconds: float = 30.0  # GATEWAY_REDISCOVER_SECONDS: re-read descriptors; 0 disables
    descriptor_set: str = str(ROOT / "coupons" / "descriptors.binpb")  # GATEWAY_DESCRIPTOR_SET: comments
    unbound_services: tuple[str, ...] = ()  # GATEWAY_UNBOUND_SERVICES: full names whose unannotated methods are routed
    static_dir: str = ""  # GATEWAY_STATIC_DIR: a directory served at / where no API route is; empty serves none
    log_level: str = "INFO"  # LOG_LEVEL

    @classmethod
    def from_env(cls) -> "GatewayConfig":
        settings = Settings.from_env("gateway")
        return cls(
            host=settings.host,
            port=settings.port,
            backends={name: getattr(settings, f"{name}_addr") for name in BACKENDS},
            default_timeout_seconds=_number("GATEWAY_DEFAULT_TIMEOUT_SECONDS", 30),
            max_timeout_seconds=_number("GATEWAY_MAX_TIMEOUT_SECONDS", 300),
            cors_origins=_names("GATEWAY_CORS_ORIGINS"),
            max_body_bytes=int(_number("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024)),
            body_timeout_seconds=_number("GATEWAY_BODY_TIMEOUT_SECONDS", 30),
            rediscover_seconds=_number("GATEWAY_REDISCOVER_SECONDS", 30),
            descriptor_set=_env("GATEWAY_DESCRIPTOR_SET", cls.descriptor_set),
            unbound_services=_names("GATEWAY_UNBOUND_SERVICES"),
            static_dir=_env("GATEWAY_STATIC_DIR", ""),
            log_level=settings.log_level,
        )
