"""Accounts for local runs and tests: the demo users of SPEC §8, created through the auth domain."""

from kernel.db import create_engine
from kernel.settings import Settings
from services.auth.passwords import PasswordHasher
from services.auth.repository import AuthRepository

DEMO_USERS = [
    ("admin@example.com", "admin123", "Admin", "ADMIN"),
    *[(f"{name}@example.com", "demo123", name.capitalize(), "USER")
      for name in ("alice", "bob", "charlie", "diana", "eve")],
]


async def ensure_user(settings: Settings, email: str, password: str, name: str, role: str) -> str:
    """Creates the account unless its email exists; returns its id.

    Demo passwords are shorter than the 8 characters the API requires, so they are stored directly;
    the demo is refused in production.
    """
    if settings.production:
        raise SystemExit("demo accounts are never created when ENVIRONMENT=production")
    engine = create_engine(settings)
    repo = AuthRepository(engine)
    try:
        async with repo.transaction() as conn:
            existing = await repo.user_by_email(conn, email)
            if existing is not None:
                return existing.id
            password_hash = await PasswordHasher(settings.bcrypt_rounds).hash(password)
            return (await repo.insert_user(conn, email, name, role, password_hash)).id
    finally:
        await engine.dispose()


async def load_demo_users(settings: Settings) -> dict[str, str]:
    return {email: await ensure_user(settings, email, password, name, role)
            for email, password, name, role in DEMO_USERS}
