"""Generate the Python stubs, their .pyi types, Envoy's descriptor set and the TypeScript
stubs from the proto alone.

Usage: python protos/generate.py [OUT_DIR]   (default: the repository root, i.e. sarah/v1/
and ts/gen/)
"""

import os
import subprocess
import sys
from pathlib import Path

import google.api
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "sarah/v1/sarah.proto"
# googleapis-common-protos ships google/api/annotations.proto beside its Python modules.
_GOOGLEAPIS = Path(google.api.__path__[0]).parent.parent
_BIN = Path(sys.executable).parent


# The transcoder renders a server error's google.rpc.BadRequest details only if their types
# are in the descriptor set too; without them such an error is a 400 with an empty body.
_ERROR_PROTOS = ["google/rpc/status.proto", "google/rpc/error_details.proto"]
# protoc-gen-es, from ts/'s npm ci (the Makefile's install step); ts/buf.gen.yaml names it.
_PROTOC_GEN_ES = ROOT / "ts" / "node_modules" / ".bin" / "protoc-gen-es"


def _protoc(*args: str) -> None:
    includes = [f"-I{ROOT / 'protos'}", f"-I{_GOOGLEAPIS}",
                f"-I{Path(protoc.__file__).parent / '_proto'}"]
    if protoc.main(["protoc", *includes, *args]) != 0:
        sys.exit("protoc failed")


def generate(out_dir: Path) -> None:
    (out_dir / "sarah" / "v1").mkdir(parents=True, exist_ok=True)
    _protoc(
        f"--plugin=protoc-gen-mypy={_BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={_BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        PROTO,
    )
    # Envoy's transcoder needs every imported file; buf lint and reflection need comments.
    _protoc(
        f"--descriptor_set_out={out_dir / 'sarah' / 'v1' / 'sarah.pb'}",
        "--include_imports",
        "--include_source_info",
        PROTO,
        *_ERROR_PROTOS,
    )
    _typescript(out_dir)


def _typescript(out_dir: Path) -> None:
    """ts/gen under out_dir, from the descriptor set just written: it holds every file the
    TypeScript needs (sarah.proto, google/api's annotations, google/rpc's BadRequest). The
    well-known types come with @bufbuild/protobuf, so google/protobuf is left out."""
    if not _PROTOC_GEN_ES.exists():
        sys.exit(f"{_PROTOC_GEN_ES} is missing: run `make .venv/.installed` (npm ci in ts/)")
    descriptor = out_dir / "sarah" / "v1" / "sarah.pb"
    # protoc-gen-es is a Node script (#!/usr/bin/env node): the venv's Node comes first.
    env = {**os.environ, "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(_BIN / "buf"), "generate", f"{descriptor}#format=binpb",
         "--template", str(ROOT / "ts" / "buf.gen.yaml"), "--exclude-path", "google/protobuf",
         "-o", str(out_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"buf generate failed: {done.stdout}{done.stderr}")


if __name__ == "__main__":
    os.chdir(ROOT)
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
