"""What the CLI prints: rich errors as sentences, a progress bar, CSV."""

import csv
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Exit codes: 0 done, 1 refused by the service, 2 bad usage, 3 service unreachable, 4 not signed in or not allowed.
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DENIED = 1, 2, 3, 4


def describe_error(error: grpc.aio.AioRpcError) -> tuple[str, int]:
    """The status, its reason and field violations, as lines a person can act on; and the exit code."""
    lines = [f"error: {error.code().name}: {error.details()}"]
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines[0] += f" [{info.reason}]"
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            lines += [f"  {v.field}: {v.description}" for v in bad.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            lines += [f"  {v.subject}: {v.description}" for v in failure.violations]
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "\n".join(lines), EXIT_UNREACHABLE
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return "\n".join(lines), EXIT_DENIED
    return "\n".join(lines), EXIT_REFUSED


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, label: str, width: int = 30):
        self.total, self.label, self.width = max(total, 1), label, width

    def update(self, done: int) -> None:
        filled = int(self.width * min(done, self.total) / self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done:,}/{self.total:,}")
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def write_csv(path: str | None, header: list[str], rows) -> int:
    """Writes rows to path (or stdout when '-' or None); returns how many."""
    out = sys.stdout if path in (None, "-") else open(path, "w", newline="")
    try:
        writer = csv.writer(out)
        writer.writerow(header)
        count = 0
        for row in rows:
            writer.writerow(row)
            count += 1
        return count
    finally:
        if out is not sys.stdout:
            out.close()
