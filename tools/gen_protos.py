"""Generate Python code and typed stubs from proto/ into gen/ (``make proto``).

Output is a regular package tree (``tutti.inventory.v1``) so code imports it by name;
gen/ is git-ignored and rebuilt whenever a .proto changes, so it can never be stale.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "gen"


def main() -> int:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        print("protoc failed", file=sys.stderr)
        return code
    for directory in [OUT / "tutti", *[p for p in (OUT / "tutti").rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
        (directory / "py.typed").touch()
    print(f"generated {len(sources)} proto files into {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
