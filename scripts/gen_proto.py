"""Regenerate lauradb/cluster/*_pb2*.py(i) from proto/ (the one command).

    python scripts/gen_proto.py          # write the generated files
    python scripts/gen_proto.py --check  # exit 1 if the checked-in files drifted
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = Path("lauradb") / "cluster"


def generate(out_root: Path) -> list[Path]:
    protos = sorted((PROTO_ROOT / "lauradb" / "cluster").glob("*.proto"))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / OUT_PACKAGE).glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / OUT_PACKAGE).mkdir(parents=True)
        generated = generate(out)
        target = ROOT / OUT_PACKAGE
        existing = sorted(target.glob("*_pb2*.py*"))
        names = {p.name for p in generated}
        if ns.check:
            drift = [p.name for p in generated if not (target / p.name).exists()
                     or not filecmp.cmp(p, target / p.name, shallow=False)]
            drift += [p.name for p in existing if p.name not in names]
            if drift:
                print("generated code drifted; run ./dev.sh gen:", ", ".join(sorted(drift)))
                return 1
            print(f"generated code up to date ({len(generated)} files)")
            return 0
        for p in existing:
            if p.name not in names:
                p.unlink()
        for p in generated:
            shutil.copyfile(p, target / p.name)
        print(f"wrote {len(generated)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
