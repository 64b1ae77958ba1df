"""Prints what generating the stubs needs, pinned as in pyproject.toml: the `build` extra (grpcio-tools), and
protobuf and googleapis-common-protos at the runtime pins (the generated code must match the runtime's protobuf;
the annotations' .proto files come with googleapis-common-protos). The image's stubs stage installs only these.
"""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FROM_RUNTIME = ("protobuf", "googleapis-common-protos")


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [d for d in project["dependencies"] if d.split("==")[0].split("[")[0] in FROM_RUNTIME]
    return project["optional-dependencies"]["build"] + runtime


if __name__ == "__main__":
    print("\n".join(requirements()))
