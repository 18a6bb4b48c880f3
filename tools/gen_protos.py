"""Generate Python code and typed stubs from proto/ into gen/ (``make proto``).

Output is a regular package tree (``tutti.inventory.v1``) so code imports it by name;
gen/ is git-ignored and rebuilt whenever a .proto changes, so it can never be stale.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "gen"


def main() -> int:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    # Generate beside gen/ and swap it in, so a running process never sees a half-written tree.
    staging = Path(tempfile.mkdtemp(prefix=".gen-", dir=ROOT))
    well_known = Path(protoc.__file__).parent / "_proto"
    # The mypy-protobuf plugins are installed next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={staging}",
        f"--grpc_python_out={staging}",
        f"--mypy_out={staging}",
        f"--mypy_grpc_out={staging}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        print("protoc failed", file=sys.stderr)
        return code
    for directory in [staging / "tutti", *[p for p in (staging / "tutti").rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
        (directory / "py.typed").touch()
    old = ROOT / f".gen-old-{os.getpid()}"
    if OUT.exists():
        OUT.rename(old)
    staging.rename(OUT)
    shutil.rmtree(old, ignore_errors=True)
    print(f"generated {len(sources)} proto files into {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
