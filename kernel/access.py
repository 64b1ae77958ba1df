"""The authorization table: who may call each method, read once from the `coupons.access.v1.access`
option every method declares in its proto, and the one check the authentication interceptor applies.

Kinds of caller (coupons.access.v1.Caller): ANYONE needs no token; USER and OWNER admit a signed-in
person (USER or ADMIN; for OWNER the domain then checks ownership); ADMIN admits the ADMIN role;
SERVICE admits only another service signed in as itself, never a person's token.
"""

from dataclasses import dataclass, field

from google.protobuf import descriptor_pool

from coupons.access.v1 import access_pb2
from kernel.context import ADMIN, PERSON_ROLES, SERVICE, Principal
from kernel.errors import PermissionDenied

ANYONE, USER, OWNER = access_pb2.CALLER_ANYONE, access_pb2.CALLER_USER, access_pb2.CALLER_OWNER
ADMIN_ONLY, SERVICE_ONLY = access_pb2.CALLER_ADMIN, access_pb2.CALLER_SERVICE
_ROLES_ADMITTED: dict[int, tuple[str, ...]] = {
    USER: PERSON_ROLES,
    OWNER: PERSON_ROLES,
    ADMIN_ONLY: (ADMIN,),
    SERVICE_ONLY: (SERVICE,),
}


@dataclass(frozen=True)
class Rule:
    callers: frozenset[int]
    roles: frozenset[str] = field(init=False)  # the token roles the callers admit, derived once

    def __post_init__(self) -> None:
        roles = {role for caller in self.callers for role in _ROLES_ADMITTED.get(caller, ())}
        object.__setattr__(self, "roles", frozenset(roles))

    @property
    def open(self) -> bool:
        return ANYONE in self.callers

    def check(self, principal: Principal) -> None:
        """Refuses a verified caller this rule does not admit, saying which kind of caller it needs."""
        if principal.role in self.roles:
            return
        if self.callers == {SERVICE_ONLY}:
            raise PermissionDenied(
                "This method is internal: only the suite's own services may call it.", reason="SERVICE_ONLY"
            )
        if principal.is_service:
            raise PermissionDenied(
                "Services may not call this method; it acts for a signed-in person.", reason="PERSON_ONLY"
            )
        if not self.callers:
            raise PermissionDenied(
                "This method declares no access rule, so nobody may call it.", reason="NO_ACCESS_RULE"
            )
        raise PermissionDenied("This method needs the ADMIN role.", reason="PERMISSION_DENIED")


NO_RULE = Rule(frozenset())
OPEN = Rule(frozenset({ANYONE}))


def rule_of(method_descriptor) -> Rule:
    options = method_descriptor.GetOptions()
    if not options.HasExtension(access_pb2.access):
        return NO_RULE
    return Rule(frozenset(options.Extensions[access_pb2.access].callers))


def table(service_names: tuple[str, ...]) -> dict[str, Rule]:
    """'/package.Service/Method' -> its rule, for every method of the services."""
    pool = descriptor_pool.Default()
    rules = {}
    for name in service_names:
        for method in pool.FindServiceByName(name).methods:
            rules[f"/{name}/{method.name}"] = rule_of(method)
    return rules
