"""AuthService over gRPC: protobuf in, domain call, protobuf out."""

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from kernel.context import current_principal
from kernel.timestamps import to_timestamp
from kernel.tokens import SigningKey, public_jwk
from kernel.validation import enum_name
from services.auth.domain import AuthDomain, Session
from services.auth.repository import UserRow
from services.auth.service_tokens import ServiceCredentials

SERVICE_NAMES = tuple(
    auth_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("AuthService", "AuthInternalService")
)


def user_message(user: UserRow) -> auth_pb2.User:
    return auth_pb2.User(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,  # the enum value's name
        active=user.active,
        create_time=to_timestamp(user.created_at),
        update_time=to_timestamp(user.updated_at),
    )


def _session(session: Session) -> auth_pb2.Session:
    return auth_pb2.Session(
        access_token=session.access_token,
        token_type="bearer",
        expires_in=session.expires_in,
        refresh_token=session.refresh_token,
        user=user_message(session.user),
    )


def _role(value: int) -> str:
    return "" if value == auth_pb2.ROLE_UNSPECIFIED else enum_name(auth_pb2.Role, value, "role")


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, domain: AuthDomain, signing_key: SigningKey, issuer: str, audience: str):
        self.domain = domain
        self.keys = auth_pb2.GetSigningKeysResponse(
            keys=[auth_pb2.JsonWebKey(**public_jwk(signing_key.public_key))], issuer=issuer, audience=audience
        )

    async def Register(self, request, context):
        return _session(await self.domain.register(request.email, request.password, request.name, request.request_id))

    async def Login(self, request, context):
        return _session(await self.domain.login(request.email, request.password))

    async def RefreshSession(self, request, context):
        return _session(await self.domain.refresh(request.refresh_token))

    async def GetMe(self, request, context):
        return user_message(await self.domain.me(current_principal()))

    async def ChangePassword(self, request, context):
        await self.domain.change_password(
            current_principal(), request.current_password, request.new_password, request.request_id
        )
        return auth_pb2.ChangePasswordResponse()

    async def CreateUser(self, request, context):
        user = await self.domain.create_user(
            request.email, request.password, request.name, _role(request.role), request.request_id
        )
        return user_message(user)

    async def ListUsers(self, request, context):
        users, next_token, total = await self.domain.list_users(
            request.page_size, request.page_token, request.email_contains
        )
        return auth_pb2.ListUsersResponse(
            users=[user_message(u) for u in users], next_page_token=next_token, total_size=total
        )

    async def GetUser(self, request, context):
        return user_message(await self.domain.get_user(request.id))

    async def UpdateUser(self, request, context):
        caller = current_principal()
        user = await self.domain.update_user(
            caller,
            request.id,
            name=request.name if request.HasField("name") else None,
            role=(_role(request.role) or "ROLE_UNSPECIFIED") if request.HasField("role") else None,
            active=request.active if request.HasField("active") else None,
            request_id=request.request_id,
        )
        return user_message(user)

    async def LookupUserByEmail(self, request, context):
        return user_message(await self.domain.lookup_by_email(request.email))

    async def GetSigningKeys(self, request, context):
        return self.keys


class AuthInternalServicer(auth_pb2_grpc.AuthInternalServiceServicer):
    """What the other services ask of auth, each signed in as itself."""

    def __init__(self, domain: AuthDomain, credentials: ServiceCredentials):
        self.domain = domain
        self.credentials = credentials

    async def IssueServiceToken(self, request, context):
        return auth_pb2.ServiceToken(
            access_token=self.credentials.issue(request.service, request.secret),
            expires_in=self.credentials.ttl_seconds,
        )

    async def BatchLookupUsers(self, request, context):
        results = await self.domain.batch_lookup(list(request.emails), list(request.user_ids))
        return auth_pb2.BatchLookupUsersResponse(
            results=[
                auth_pb2.UserLookupResult(
                    query=r.query, user=user_message(r.user) if r.user else None, error_reason=r.error_reason
                )
                for r in results
            ]
        )

    async def ListRevocations(self, request, context):
        return auth_pb2.ListRevocationsResponse(
            revocations=[
                auth_pb2.Revocation(user_id=r.user_id, not_before_time=to_timestamp(r.not_before), disabled=r.disabled)
                for r in await self.domain.revocations()
            ]
        )
