"""Build step for runwarden-client: compiles the runwarden protos into the package.

The stubs are generated, never committed. ``build_py`` (which runs for ``pip install .``,
``pip install -e .`` and wheel builds) and ``sdist`` call :func:`generate`, which runs
``grpc_tools.protoc`` with the repository's ``proto/`` directory (``../../proto`` from here, or
``$RUNWARDEN_PROTO_DIR``), this directory's ``proto/`` (private wire-compatible copies of
google.rpc.Status and google.rpc.BadRequest) and grpc_tools' bundled well-known types on the
include path, and writes ``runwarden/v1/*_pb2*.py[i]`` and ``runwarden/_rpc/status_pb2.py[i]``:
into the build directory for a regular build, into the source tree for an editable install or an
sdist (``.gitignore`` keeps them out of git). Because the proto package is ``runwarden.v1`` and
the import package is ``runwarden``, the generated ``from runwarden.v1 import ...`` lines resolve
inside this package without rewriting.

Generated code checks at import time that the installed protobuf and grpcio are not older than
the generator, so the runtime requirements are computed here from the generated files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = HERE / "runwarden"
LOCAL_PROTO = HERE / "proto"
# Generated sub-packages, each with the proto directory it comes from (relative to an include root).
GENERATED = ("v1", "_rpc")
GENERATED_PATTERNS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")

# Floors used only when the generated code carries no version check (very old grpcio-tools).
PROTOBUF_FLOOR = "3.20.0"
GRPCIO_FLOOR = "1.50.0"


def _repo_proto_dir() -> Optional[Path]:
    env = os.environ.get("RUNWARDEN_PROTO_DIR")
    candidate = Path(env).resolve() if env else (HERE / ".." / ".." / "proto").resolve()
    return candidate if (candidate / "runwarden" / "v1").is_dir() else None


def _wkt_include() -> str:
    try:
        import grpc_tools
    except ImportError as exc:
        raise ImportError(
            "grpcio-tools is needed to build runwarden-client (a build requirement that pip "
            "installs itself unless --no-build-isolation is given): {}".format(exc)
        ) from exc

    return str(Path(grpc_tools.__file__).resolve().parent / "_proto")


def _protoc(args: List[str]) -> None:
    cmd = [sys.executable, "-m", "grpc_tools.protoc", *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError("grpc_tools.protoc failed ({}):\n{}".format(" ".join(cmd), proc.stdout))


def _compile_into(out_dir: Path, proto_dir: Path) -> None:
    """Compiles every runwarden proto (and the private rpc protos) into ``out_dir``."""
    includes = ["-I" + str(proto_dir), "-I" + str(LOCAL_PROTO), "-I" + _wkt_include()]
    messages = sorted(str(p) for p in (proto_dir / "runwarden" / "v1").glob("*.proto"))
    messages += sorted(str(p) for p in (LOCAL_PROTO / "runwarden" / "_rpc").glob("*.proto"))
    if not messages:
        raise RuntimeError("no .proto files found under {}".format(proto_dir))
    services = [p for p in messages if re.search(r"^\s*service\s+\w+", Path(p).read_text(), re.M)]
    out = str(out_dir)
    _protoc(includes + ["--python_out=" + out, "--pyi_out=" + out] + messages)
    if services:
        _protoc(includes + ["--grpc_python_out=" + out] + services)


def _has_generated_stubs(package_dir: Path = PACKAGE_DIR) -> bool:
    return (package_dir / "v1" / "report_service_pb2_grpc.py").is_file() and (
        package_dir / "_rpc" / "status_pb2.py"
    ).is_file()


def generate(package_dir: Path = PACKAGE_DIR) -> None:
    """(Re)generates the stubs into ``package_dir`` (the ``runwarden`` package directory of the
    source tree or of the build directory). Without protos (building from an sdist) the stubs the
    sdist carries are kept."""
    proto_dir = _repo_proto_dir()
    if proto_dir is None:
        if _has_generated_stubs():
            return  # an sdist: the stubs were generated when it was made (and copied by build_py)
        raise RuntimeError(
            "runwarden protos not found at {} (set RUNWARDEN_PROTO_DIR)".format(
                (HERE / ".." / ".." / "proto").resolve()
            )
        )
    with tempfile.TemporaryDirectory(prefix="runwarden-protoc-") as tmp:
        _compile_into(Path(tmp), proto_dir)
        for sub in GENERATED:
            target = package_dir / sub
            target.mkdir(parents=True, exist_ok=True)
            for pattern in GENERATED_PATTERNS:
                for stale in target.glob(pattern):
                    stale.unlink()
            for produced in sorted((Path(tmp) / "runwarden" / sub).iterdir()):
                shutil.copy2(produced, target / produced.name)


def _versions_in(directory: Path) -> Tuple[Optional[str], Optional[str]]:
    """The protobuf and grpcio versions the generated code in ``directory`` demands."""
    protobuf = grpcio = None
    for path in sorted(directory.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        m = re.search(
            r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
            r"(\d+),\s*(\d+),\s*(\d+),",
            text,
        )
        if m and protobuf is None:
            protobuf = ".".join(m.groups())
        m = re.search(r"GRPC_GENERATED_VERSION\s*=\s*['\"]([0-9.]+)['\"]", text)
        if m and grpcio is None:
            grpcio = m.group(1)
    return protobuf, grpcio


def runtime_requirements() -> List[str]:
    proto_dir = _repo_proto_dir()
    protobuf = grpcio = None
    if proto_dir is not None:
        try:
            with tempfile.TemporaryDirectory(prefix="runwarden-probe-") as tmp:
                _compile_into(Path(tmp), proto_dir)
                protobuf, grpcio = _versions_in(Path(tmp))
        except ImportError:
            pass  # grpcio-tools absent: not a build (e.g. a bare `setup.py --version`)
    elif _has_generated_stubs():
        protobuf, grpcio = _versions_in(PACKAGE_DIR)
    return [
        "grpcio>={}".format(grpcio or GRPCIO_FLOOR),
        "protobuf>={}".format(protobuf or PROTOBUF_FLOOR),
    ]


class build_py(_build_py):
    def run(self) -> None:
        editable = bool(getattr(self, "editable_mode", False))
        if editable:
            generate()  # the editable install imports from the source tree
        super().run()
        if not editable:
            generate(Path(self.build_lib) / "runwarden")


class sdist(_sdist):
    def run(self) -> None:
        generate()
        super().run()


setup(
    install_requires=runtime_requirements(),
    cmdclass={"build_py": build_py, "sdist": sdist},
)
