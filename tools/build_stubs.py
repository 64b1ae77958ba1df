"""Generates the Python stubs, type stubs and a descriptor set (with comments) from protos/.

Run by the Makefile before every entry point; the output under coupons/ is never edited by hand.
"""

import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT


def _include_dirs() -> list[str]:
    import google.api  # googleapis-common-protos ships google/api/annotations.proto

    googleapis = pathlib.Path(google.api.__path__[0]).parent.parent
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    return [str(PROTOS), str(googleapis), str(well_known)]


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--python_out={OUT}", f"--pyi_out={OUT}", f"--grpc_python_out={OUT}"]
    args += [
        f"--descriptor_set_out={OUT / 'coupons' / 'descriptors.binpb'}",
        "--include_source_info",
        "--include_imports",
    ]
    code = protoc.main(args + sources)
    if code != 0:
        return code
    for directory in (OUT / "coupons").rglob("*"):
        if directory.is_dir() and directory.name != "__pycache__":
            (directory / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
