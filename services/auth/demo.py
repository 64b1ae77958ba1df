"""Accounts for local runs and tests: the demo users of SPEC §8, created through the auth domain."""

from kernel.db import create_engine
from kernel.settings import Settings
from services.auth.passwords import PasswordHasher
from services.auth.repository import AuthRepository

DEMO_USERS = [
    ("admin@example.com", "admin123", "Admin", "ADMIN"),
    *[
        (f"{name}@example.com", "demo123", name.capitalize(), "USER")
        for name in ("alice", "bob", "charlie", "diana", "eve")
    ],
]
# Refused at sign-in when ENVIRONMENT=production, even if a database already holds them.
DEMO_EMAILS = frozenset(email for email, *_ in DEMO_USERS)


async def ensure_users(settings: Settings, users: list[tuple[str, str, str, str]]) -> dict[str, str]:
    """Creates each (email, password, name, role) account unless its email exists; returns their ids.

    Demo passwords are shorter than the 8 characters the API requires, so they are stored directly;
    the demo is refused in production. One engine and one hasher serve the whole list.
    """
    if settings.production:
        raise SystemExit("demo accounts are never created when ENVIRONMENT=production")
    engine = create_engine(settings)
    repo, hasher = AuthRepository(engine), PasswordHasher(settings.bcrypt_rounds)
    ids: dict[str, str] = {}
    try:
        for email, password, name, role in users:
            async with repo.transaction() as conn:
                existing = await repo.user_by_email(conn, email)
                if existing is None:
                    existing = await repo.insert_user(conn, email, name, role, await hasher.hash(password))
                ids[email] = existing.id
    finally:
        await engine.dispose()
    return ids


async def ensure_user(settings: Settings, email: str, password: str, name: str, role: str) -> str:
    return (await ensure_users(settings, [(email, password, name, role)]))[email]


async def load_demo_users(settings: Settings) -> dict[str, str]:
    return await ensure_users(settings, DEMO_USERS)
