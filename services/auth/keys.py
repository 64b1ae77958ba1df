"""The token signing key: read from JWT_PRIVATE_KEY_FILE; generated on first local run, never in production."""

import os
from pathlib import Path

from kernel.settings import Settings
from kernel.tokens import SigningKey


def load_signing_key(settings: Settings) -> SigningKey:
    path = Path(settings.jwt_private_key_file)
    if path.exists():
        return SigningKey.from_pem(path.read_bytes())
    if settings.production:
        raise SystemExit(f"JWT_PRIVATE_KEY_FILE {path} does not exist; production never generates a signing key")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(SigningKey.generate().to_pem())
    temporary.chmod(0o600)
    try:
        # Atomic and never overwriting: auth's workers (WORKERS > 1) start at once, and all must sign with
        # the one key that won, or a token from one would fail at another.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return SigningKey.from_pem(path.read_bytes())
