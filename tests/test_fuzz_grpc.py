"""Random and mutated protobuf messages on every method of every service, read from the descriptors.

Each method gets GRPC_CASES requests (times FUZZ_SCALE) from each of an ADMIN, a USER and a SERVICE caller
that its access rule admits, and GRPC_REFUSED_CASES from each it refuses (refused before parsing), drawn from
a random generator seeded by the method and the caller, so a failure reproduces: random bytes,
"valid-ish" messages (every field filled from its type, often with extreme values, often naming the real
book, codes, pool and user of the fuzz world), and those serializations bit-flipped, truncated, extended
(with garbage, unknown fields, or a second copy, which protobuf merges), with a field under the wrong wire
type, with huge or overlong varints and length prefixes, with invalid UTF-8 in a string, and nested
hundreds of groups deep. Every answer must be a success, INVALID_ARGUMENT or a domain refusal; never
INTERNAL, UNKNOWN, UNAVAILABLE or a deadline, as the client saw it and as the servers recorded it.
"""

import collections
import random
import string
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pool, message_factory

from kernel import access, metrics
from kernel.context import ADMIN, SERVICE, USER
from services.auth.servicer import SERVICE_NAMES as AUTH
from services.books.servicer import SERVICE_NAME as BOOKS
from services.pools.servicer import SERVICE_NAME as POOLS
from services.redemption.servicer import SERVICE_NAMES as REDEMPTION
from tests.fixtures_fuzz import FUZZ_SCALE, FuzzWorld

GRPC_CASES = 40  # per method and caller its access rule admits
GRPC_REFUSED_CASES = 3  # per method and caller its rule refuses: refused before the message is parsed
CALL_TIMEOUT_SECONDS = 10
MAX_STREAMED_RESPONSES = 1000  # a server stream is read this far, then cancelled
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
ADMITS = {  # caller kind -> the access rules that admit it (kernel/access.py)
    USER: {access.ANYONE, access.USER, access.OWNER},
    ADMIN: {access.ANYONE, access.USER, access.OWNER, access.ADMIN_ONLY},
    SERVICE: {access.ANYONE, access.SERVICE_ONLY},
}
WILDNESS = (0.05, 0.2, 0.6)  # the share of extreme values in a valid-ish message, drawn per case
# grpc's client, not the server: when a server ends a client stream while the client still writes, the
# client can fail its own write and report this instead of the server's status (grpc.aio set_internal_error).
CLIENT_CUT = (grpc.StatusCode.INTERNAL, "Internal error from Core")
# Methods that take the world's pool or book away (or archive it in the ledger) run after all the others.
LAST = ("DeletePool", "ArchiveBook", "PutBookRules")
_F = descriptor.FieldDescriptor
_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_INT32 = (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32)
_UINT = (_F.TYPE_UINT32, _F.TYPE_FIXED32, _F.TYPE_UINT64, _F.TYPE_FIXED64)


# The wire format, by hand: what no valid message can hold.


def _varint(value: int) -> bytes:
    """Any non-negative integer as a varint, also those past 64 bits (which no parser may accept)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, _LENGTH) + _varint(len(payload)) + payload


def _wire_type(field: descriptor.FieldDescriptor) -> int:
    if field.type in (_F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE) or field.is_packed:
        return _LENGTH
    if field.type in (_F.TYPE_DOUBLE, _F.TYPE_FIXED64, _F.TYPE_SFIXED64):
        return _FIXED64
    if field.type in (_F.TYPE_FLOAT, _F.TYPE_FIXED32, _F.TYPE_SFIXED32):
        return _FIXED32
    return _VARINT


def _payload_of(wire_type: int, rng: random.Random) -> bytes:
    if wire_type == _VARINT:
        return _varint(rng.getrandbits(rng.choice((7, 32, 64))))
    if wire_type == _FIXED64:
        return rng.randbytes(8)
    if wire_type == _FIXED32:
        return rng.randbytes(4)
    if wire_type == _LENGTH:
        data = rng.randbytes(rng.randrange(0, 16))
        return _varint(len(data)) + data
    return b""


# Valid-ish messages: every field filled from its type.


class Filler:
    """Fills messages with values of their fields' types: the fuzz world's real ids, plausible values, or
    (each with probability `wild`) extreme ones, so a request often passes most checks and fails one."""

    def __init__(self, rng: random.Random, known: dict[str, list[str]], wild: float):
        self.rng = rng
        self.known = known
        self.wild = wild

    def text(self, name: str) -> str:
        rng = self.rng
        known = self.known.get(name) or self.known.get(name.removesuffix("s")) or []
        if known and rng.random() < 0.6:
            return rng.choice(known)
        return self.wild_text() if rng.random() < self.wild else self.plausible_text(name)

    def plausible_text(self, name: str) -> str:
        rng = self.rng
        if name.endswith(("id", "ids")):
            return rng.choice((str(uuid.uuid4()), ""))
        if "email" in name:
            return f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
        if "password" in name or name == "secret":
            return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(8, 20)))
        if "code" in name and "pattern" not in name and "alphabet" not in name:
            return "".join(rng.choice("AB") for _ in range(4))
        if "pattern" in name:
            return rng.choice(("{}", "FZ-{}", "{}-X", "A{}B"))
        if "alphabet" in name:
            return rng.choice(("AB", "ABCDEF", "0123456789", ""))
        if "token" in name:
            return rng.choice(("", uuid.uuid4().hex))
        return rng.choice(("", "Fuzz", "fuzz name", "Ünïcode ✓", "x" * 30))

    def wild_text(self) -> str:
        rng = self.rng
        choice = rng.randrange(11)
        if choice == 0:
            return str(uuid.UUID(int=rng.getrandbits(128)))
        if choice == 1:
            return rng.choice(("me", " ", "\t\n", "null", "*", "%", "'; DROP TABLE x; --", "..", "/", "{}{}", "A" * 4))
        if choice == 2:  # control characters and NUL, which PostgreSQL text cannot hold
            return "".join(rng.choice("\x00\x01\x1f\x7fA ") for _ in range(rng.randrange(1, 10)))
        if choice == 3:  # long
            return rng.choice(string.ascii_letters) * rng.choice((65, 129, 255, 256, 1025, 5000, 70_000))
        if choice == 4:  # any code point but the surrogates (a str holding them cannot be serialized)
            return "".join(chr(rng.choice((rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)))) for _ in range(8))
        if choice == 5:
            return rng.choice(("a@b", "@example.com", "x@y.z" * 60, "ADMIN@EXAMPLE.COM", " a@example.com "))
        if choice == 6:  # a plausible code
            return "".join(
                rng.choice(string.ascii_uppercase + string.digits + "-_") for _ in range(rng.randrange(3, 70))
            )
        if choice == 7:
            return rng.choice(("ADMIN", "USER", "ACTIVE", "ARCHIVED", "books", "pools", "redemption", "EQUAL"))
        if choice == 8:  # a page token that is not one
            return rng.choice(("x", "AAAA", "eyJ9", "====", "0" * 40, "MjAyNi0wMS0wMVQwMDowMDowMHx4"))
        if choice == 9:
            return ""
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 40)))

    def integer(self, field: descriptor.FieldDescriptor) -> int:
        rng = self.rng
        if rng.random() >= self.wild:
            return rng.choice((0, 1, 2, 3, 5, 10, 100))
        if field.type in _UINT:
            bits = 32 if field.type in (_F.TYPE_UINT32, _F.TYPE_FIXED32) else 64
            return rng.choice((0, 1, 2**bits - 1, rng.getrandbits(bits), rng.randrange(1, 100)))
        bits = 32 if field.type in _INT32 or field.type == _F.TYPE_ENUM else 64
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return rng.choice((0, 1, -1, 2, 3, 10, 1000, low, high, rng.randint(low, high), rng.randrange(0, 100)))

    def scalar(self, field: descriptor.FieldDescriptor):
        rng = self.rng
        if field.type == _F.TYPE_STRING:
            return self.text(field.name)
        if field.type == _F.TYPE_BYTES:
            return rng.randbytes(rng.randrange(0, 40))
        if field.type == _F.TYPE_BOOL:
            return rng.random() < 0.5
        if field.type in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
            return rng.choice((0.0, -1.5, 1e300, float("inf"), float("-inf"), float("nan"), rng.random()))
        if field.type == _F.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values]
            return rng.choice(numbers) if rng.random() < 0.7 else self.integer(field)
        return self.integer(field)

    def fill(self, message, depth: int = 0) -> None:
        rng = self.rng
        name = message.DESCRIPTOR.full_name
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration") and rng.random() >= self.wild:
            message.seconds = int(time.time()) + rng.randint(-10 * 86400, 10 * 86400)
            return
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            message.seconds = rng.choice(
                (0, 1_700_000_000, -62_135_596_801, 253_402_300_800, 2**63 - 1, -(2**63), rng.getrandbits(40))
            )
            message.nanos = rng.choice((0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1))
            return
        if name == "google.protobuf.FieldMask":
            message.paths.extend(rng.choice(("name", "description", "code_length", "id", "x", "")) for _ in range(3))
            return
        for field in message.DESCRIPTOR.fields:
            if rng.random() < 0.25:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue  # no request of the suite has a map
            count = 1
            if field.is_repeated:
                count = rng.choice((0, 1, 2, 3, 5, 1001)) if rng.random() < self.wild else rng.choice((0, 1, 2))
            if field.message_type is not None:
                if depth > 4:
                    continue
                for _ in range(min(count, 20)):
                    child = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
                    self.fill(child, depth + 1)
                    if not field.is_repeated:
                        child.SetInParent()
            elif field.is_repeated:
                values = [self.scalar(field) for _ in range(count)]
                if count == 1001 and field.type == _F.TYPE_STRING and rng.random() < 0.5:
                    values = [str(uuid.uuid4()) for _ in range(count)]
                getattr(message, field.name).extend(values)
            else:
                setattr(message, field.name, self.scalar(field))


# Mutations of a valid-ish serialization.


def _fields(message_type: descriptor.Descriptor) -> list[descriptor.FieldDescriptor]:
    return list(message_type.fields)


def _random_bytes(rng, message_type, valid: bytes) -> bytes:
    return rng.randbytes(rng.choice((1, 2, 3, 7, 16, 64, 513)))


def _valid(rng, message_type, valid: bytes) -> bytes:
    return valid


def _bit_flipped(rng, message_type, valid: bytes) -> bytes:
    data = bytearray(valid or rng.randbytes(8))
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _truncated(rng, message_type, valid: bytes) -> bytes:
    return valid[: rng.randrange(len(valid))] if len(valid) > 1 else b"\x0a"


def _extended(rng, message_type, valid: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:  # garbage after the message
        return valid + rng.randbytes(rng.randint(1, 16))
    if choice == 1:  # unknown fields of every wire type
        number = rng.choice((1000, 2**29 - 1, 19_000, 15, 16))
        wire_type = rng.choice((_VARINT, _FIXED64, _LENGTH, _FIXED32))
        return valid + _tag(number, wire_type) + _payload_of(wire_type, rng)
    if choice == 2:  # the message twice: protobuf merges them (repeated fields double)
        return valid + valid
    return _tag(0, _VARINT) + b"\x01" + valid  # field number 0 is never valid


def _wrong_wire_type(rng, message_type, valid: bytes) -> bytes:
    fields = _fields(message_type)
    if not fields:
        return valid + _tag(1, _LENGTH) + b"\x01x"
    field = rng.choice(fields)
    wire_type = rng.choice([t for t in (_VARINT, _FIXED64, _LENGTH, _START_GROUP, _FIXED32) if t != _wire_type(field)])
    payload = _payload_of(wire_type, rng) + (_tag(field.number, _END_GROUP) if wire_type == _START_GROUP else b"")
    return valid + _tag(field.number, wire_type) + payload


def _huge_varint(rng, message_type, valid: bytes) -> bytes:
    fields = _fields(message_type) or [None]
    field = rng.choice(fields)
    number = field.number if field is not None else 1
    choice = rng.randrange(4)
    if choice == 0:  # eleven bytes: past 64 bits
        return valid + _tag(number, _VARINT) + b"\xff" * 10 + b"\x01"
    if choice == 1:  # 2^64 - 1 and 2^70
        return valid + _tag(number, _VARINT) + _varint(rng.choice((2**64 - 1, 2**70)))
    if choice == 2:  # a length prefix far past the end
        return valid + _tag(number, _LENGTH) + _varint(rng.choice((2**31, 2**32 + 5, 2**62, 1000))) + b"ab"
    return valid + _tag(number, _VARINT) + b"\x80" * rng.randint(1, 12)  # a varint that never ends


def _invalid_utf8(rng, message_type, valid: bytes) -> bytes:
    strings = [f for f in _fields(message_type) if f.type == _F.TYPE_STRING] or [None]
    field = rng.choice(strings)
    bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"A\x80B", b"\xf4\x90\x80\x80"))
    return valid + _delimited(field.number if field else 1, bad)


def _deep(rng, message_type, valid: bytes) -> bytes:
    """Nested past every parser's limit: along the message's own fields as far as they go, then in groups."""
    depth = rng.choice((64, 101, 200, 5000))
    inner = _tag(9999, _START_GROUP) * depth + _tag(9999, _END_GROUP) * depth
    path, current = [], message_type
    while current is not None and len(path) < 10:
        children = [f for f in current.fields if f.message_type is not None]
        if not children:
            break
        field = rng.choice(children)
        path.append(field.number)
        current = field.message_type
    for number in reversed(path):
        inner = _delimited(number, inner)
    if not path and rng.random() < 0.5:  # no message field: nest unknown length-delimited fields instead
        for _ in range(depth):
            inner = _delimited(1, inner)
    return valid + inner


MUTATIONS: tuple[Callable, ...] = (
    _valid,
    _valid,
    _random_bytes,
    _bit_flipped,
    _truncated,
    _extended,
    _wrong_wire_type,
    _huge_varint,
    _invalid_utf8,
    _deep,
)


# The calls.


def _methods(servers: dict[str, tuple[str, ...]]) -> list[tuple[str, str, descriptor.MethodDescriptor]]:
    """(address, path, method) of every method of every server, the destructive ones last."""
    methods = [
        (address, f"/{name}/{method.name}", method)
        for address, names in servers.items()
        for name in names
        for method in descriptor_pool.Default().FindServiceByName(name).methods
    ]
    return sorted(methods, key=lambda item: item[2].name in LAST)


def _known(world: FuzzWorld, callers) -> dict[str, list[str]]:
    users = [world.target_user_id, "me", callers[USER].user_id]
    return {
        "book_id": [world.book_id],
        "id": [world.book_id, world.pool_id, world.target_user_id],
        "pool_id": [world.pool_id],
        "user_id": users,
        "code": list(world.codes),
        "email": [world.target_email, world.target_email.upper()],
        "service": ["books", "pools", "redemption", "auth"],
        "distribution_id": [str(uuid.uuid4())],
        "request_id": [uuid.uuid4().hex, "r-1"],
    }


def _requests(rng: random.Random, method, known) -> tuple[str, list[bytes]]:
    """One case: its mutation's name and the serialized requests (several for a client stream)."""
    message_class = message_factory.GetMessageClass(method.input_type)
    mutation = rng.choice(MUTATIONS)
    payloads = []
    for _ in range(rng.randint(1, 3) if method.client_streaming else 1):
        message = message_class()
        Filler(rng, known, wild=rng.choice(WILDNESS)).fill(message)
        payloads.append(mutation(rng, method.input_type, message.SerializeToString()))
    return mutation.__name__.strip("_"), payloads


async def _call(channel, path: str, method, payloads: list[bytes], metadata) -> tuple[grpc.StatusCode, str]:
    codec = {"request_serializer": None, "response_deserializer": None}  # bytes as they are, both ways
    try:
        if method.client_streaming:
            await channel.stream_unary(path, **codec)(iter(payloads), metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        elif method.server_streaming:
            call = channel.unary_stream(path, **codec)(payloads[0], metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
            received = 0
            async for _ in call:
                received += 1
                if received >= MAX_STREAMED_RESPONSES:
                    call.cancel()
                    break
        else:
            await channel.unary_unary(path, **codec)(payloads[0], metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _server_faults() -> collections.Counter:
    """What the servers themselves recorded (kernel.metrics), by component, method and code, other than ALLOWED."""
    allowed = {code.name for code in ALLOWED}
    return collections.Counter(
        {
            (sample.labels["component"], sample.labels["method"], sample.labels["code"]): sample.value
            for metric in metrics.RPCS.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels["code"] not in allowed
        }
    )


@pytest.fixture(scope="module")
def fuzz_servers(fuzz_auth_server, books_server, redemption_server, pools_server) -> dict[str, tuple[str, ...]]:
    return {fuzz_auth_server: AUTH, books_server: (BOOKS,), redemption_server: REDEMPTION, pools_server: (POOLS,)}


async def test_every_method_answers_random_and_mutated_messages_with_a_defined_status(
    fuzz_servers, fuzz_callers, fuzz_world
):
    known = _known(fuzz_world, fuzz_callers)
    faults_before = _server_faults()
    outcomes: collections.Counter = collections.Counter()
    cases: collections.Counter = collections.Counter()
    failures = []
    channels = {address: grpc.aio.insecure_channel(address) for address in fuzz_servers}
    try:
        for address, path, method in _methods(fuzz_servers):
            callers = access.rule_of(method).callers
            for kind in (ADMIN, USER, SERVICE):
                rng = random.Random(f"{path} {kind}")
                budget = GRPC_CASES if callers & ADMITS[kind] else GRPC_REFUSED_CASES
                for number in range(budget * FUZZ_SCALE):
                    mutation, payloads = _requests(rng, method, known)
                    code, details = await _call(channels[address], path, method, payloads, fuzz_callers[kind].metadata)
                    cases[path] += 1
                    if method.client_streaming and (code, details) == CLIENT_CUT:
                        outcomes["CLIENT_CUT"] += 1  # the server's own answer is checked below
                        continue
                    outcomes[code.name] += 1
                    if code not in ALLOWED:
                        failures.append(
                            f"{path} as {kind}, case {number} ({mutation}): {code.name} {details!r}; "
                            f"request {payloads[0][:120].hex()}"
                        )
    finally:
        for channel in channels.values():
            await channel.close()
    print(f"gRPC fuzz: {sum(cases.values())} cases over {len(cases)} methods; {dict(outcomes)}")
    assert not failures, "\n".join(failures)
    faults = _server_faults() - faults_before
    assert not faults, f"the servers answered these themselves: {dict(faults)}"
    assert len(cases) == len(_methods(fuzz_servers)) > 40
