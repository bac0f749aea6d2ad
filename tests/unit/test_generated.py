"""The committed code in sarah/v1 and ts/gen is exactly what the proto generates, the proto
lints, and the TypeScript that uses ts/gen type-checks."""

import subprocess
import sys
from pathlib import Path

from deploy import ROOT

GENERATED = ["sarah_pb2.py", "sarah_pb2.pyi", "sarah_pb2_grpc.py", "sarah_pb2_grpc.pyi",
             "sarah.pb"]
TS_GENERATED = Path("ts") / "gen"  # every file in it


def test_generated_files_are_not_stale(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT, timeout=120)
    stale = [name for name in GENERATED
             if (tmp_path / "sarah" / "v1" / name).read_bytes()
             != (ROOT / "sarah" / "v1" / name).read_bytes()]
    generated, committed = _files(tmp_path / TS_GENERATED), _files(ROOT / TS_GENERATED)
    stale += [str(TS_GENERATED / name) for name in sorted(set(generated) | set(committed))
              if generated.get(name) != committed.get(name)]
    assert not stale, f"run `make protos` and commit: {stale} differ from protos/"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in folder.rglob("*") if path.is_file()}


def test_the_typescript_type_checks() -> None:
    """ts/example.ts and ts/test against ts/gen's .d.ts, with ts/'s own tsc (`make typecheck`)."""
    done = subprocess.run([str(ROOT / "ts" / "node_modules" / ".bin" / "tsc"), "-p", "ts"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_lint_passes() -> None:
    buf = Path(sys.executable).parent / "buf"
    done = subprocess.run(
        [str(buf), "lint", "sarah/v1/sarah.pb#format=binpb", "--config", "buf.yaml"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
