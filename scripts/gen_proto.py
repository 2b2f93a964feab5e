#!/usr/bin/env python3
"""Generate the gRPC Python code for `proto/aerplane/v1/*.proto` into `services/aerplane/rpc/v1/`.

    .venv/bin/python scripts/gen_proto.py          # regenerate (commit the result)
    .venv/bin/python scripts/gen_proto.py --check  # regenerate into a temp dir; exit 1 if the checked-in code differs

protoc runs with `-Iproto`, so each file keeps its canonical name (`aerplane/v1/coefficient.proto`, the name gRPC
reflection serves) and the output lands in `aerplane/v1/`. The Python package is `aerplane.rpc.v1` (STYLE §12), so
the generated modules are moved there and the one import protoc writes from the proto path
(`from aerplane.v1 import coefficient_pb2`) is rewritten to `from aerplane.rpc.v1 import ...`. The output depends
only on the proto files and the grpcio-tools version (pinned by the environment), so it is deterministic.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = "aerplane/v1"  # path of the proto package under proto/
OUT_DIR = ROOT / "services" / "aerplane" / "rpc" / "v1"
PY_PACKAGE = "aerplane.rpc.v1"
SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def generate(dest: Path) -> list[Path]:
    """Run protoc on every proto in the package; write the fixed-up modules into `dest`. Returns the files."""
    from grpc_tools import protoc

    protos = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="aerplane-protoc-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        code = protoc.main(args)
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        produced = sorted((Path(tmp) / PROTO_PACKAGE).iterdir())
        written = []
        dest.mkdir(parents=True, exist_ok=True)
        for src in produced:
            if not src.name.endswith(SUFFIXES):
                continue
            text = _fix_imports(src.read_text(encoding="utf-8"))
            out = dest / src.name
            out.write_text(text, encoding="utf-8")
            written.append(out)
    return written


def _fix_imports(text: str) -> str:
    """`from aerplane.v1 import x_pb2` → `from aerplane.rpc.v1 import x_pb2` (the package protoc can't know)."""
    proto_pkg = PROTO_PACKAGE.replace("/", ".")
    return re.sub(rf"^from {re.escape(proto_pkg)} import ", f"from {PY_PACKAGE} import ", text, flags=re.MULTILINE)


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="aerplane-gen-check-") as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        current = {p.name: p for p in OUT_DIR.iterdir() if p.name.endswith(SUFFIXES)} if OUT_DIR.exists() else {}
        problems = []
        for name in sorted(fresh.keys() | current.keys()):
            if name not in current:
                problems.append(f"missing: {OUT_DIR / name}")
                continue
            if name not in fresh:
                problems.append(f"stale (no proto generates it): {OUT_DIR / name}")
                continue
            a = current[name].read_text(encoding="utf-8").splitlines(keepends=True)
            b = fresh[name].read_text(encoding="utf-8").splitlines(keepends=True)
            if a != b:
                diff = "".join(difflib.unified_diff(a, b, f"checked-in/{name}", f"regenerated/{name}", n=1))
                problems.append(f"differs: {OUT_DIR / name}\n{diff[:4000]}")
    if problems:
        print("generated gRPC code is out of date; run scripts/gen_proto.py", file=sys.stderr)
        for p in problems:
            print(p, file=sys.stderr)
        return 1
    print(f"generated gRPC code in {OUT_DIR.relative_to(ROOT)} is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail (exit 1) if the checked-in code is stale")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    with tempfile.TemporaryDirectory(prefix="aerplane-gen-") as tmp:
        fresh = generate(Path(tmp))
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        keep = {p.name for p in fresh}
        for old in OUT_DIR.iterdir():
            if old.name.endswith(SUFFIXES) and old.name not in keep:
                old.unlink()
        for p in fresh:
            shutil.copyfile(p, OUT_DIR / p.name)
            print(f"wrote {(OUT_DIR / p.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
