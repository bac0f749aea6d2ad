"""The committed code in sarah/v1 is exactly what the proto generates, and the proto lints."""

import subprocess
import sys
from pathlib import Path

from deploy import ROOT

GENERATED = ["sarah_pb2.py", "sarah_pb2.pyi", "sarah_pb2_grpc.py", "sarah_pb2_grpc.pyi",
             "sarah.pb"]


def test_generated_files_are_not_stale(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT, timeout=120)
    stale = [name for name in GENERATED
             if (tmp_path / "sarah" / "v1" / name).read_bytes()
             != (ROOT / "sarah" / "v1" / name).read_bytes()]
    assert not stale, f"run `make protos` and commit: {stale} differ from protos/"


def test_buf_lint_passes() -> None:
    buf = Path(sys.executable).parent / "buf"
    done = subprocess.run(
        [str(buf), "lint", "sarah/v1/sarah.pb#format=binpb", "--config", "buf.yaml"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
