"""Peak memory of the splitter's read path, in a child process per input size.

The child runs the real `splitter.split.cut_object` (ranged GETs -> chunker ->
messages -> encode -> Enqueuer) over a file on disk served by a fake S3 client
(fanout_cli.local.file_s3.FileS3: head_object, get_object with Range), sending to an SQS client that
discards. moto is not used here because it keeps the whole object in the process's
memory, which would measure moto rather than the splitter. The child reports its own
peak RSS (VmHWM; see `_rss_mb` for why not ru_maxrss on Linux), and its peak after the
imports for reference.

Run as a child: python -m bench.memory FILE
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MemoryRun:
    input_bytes: int
    rows: int
    peak_mb: float
    imports_mb: float
    seconds: float


def _rss_mb() -> float:
    """This process's peak RSS in MB.

    Linux carries ru_maxrss across exec (it keeps the larger of the pre-exec and the new
    address space's peak), so a child started by a big parent would report the parent's
    peak; VmHWM in /proc/self/status is the peak of this address space alone. Elsewhere,
    ru_maxrss.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def child(path: Path) -> dict[str, float]:
    from bench.cpu import run_splitter
    from bench.fakes import NullSQS
    from fanout_cli.local.file_s3 import FileS3

    imports_mb = _rss_mb()
    s3 = FileS3(path)
    started = time.monotonic()
    try:
        rows = run_splitter(s3, NullSQS())
    finally:
        s3.close()
    return {"rows": rows, "peak_mb": _rss_mb(), "imports_mb": imports_mb,
            "seconds": time.monotonic() - started}


def measure(path: Path) -> MemoryRun:
    """Run the child on `path` and read its report."""
    done = subprocess.run([sys.executable, "-m", "bench.memory", str(path)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed on {path}:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryRun(path.stat().st_size, int(report["rows"]), report["peak_mb"],
                     report["imports_mb"], report["seconds"])


if __name__ == "__main__":
    print(json.dumps(child(Path(sys.argv[1]))))
