"""Batch memory: peak client RSS against batch length, each line its own local image.

Issue #7's figure: a batch of N lines, each with its own image file of S MB
(distinct random pixels, so every file is different and none compresses), run
to the end against the emulator in another process. The client runs in a
FRESH subprocess per point, so its peak RSS (``ru_maxrss`` of that process,
read by the parent with ``os.wait4``) is its own. Default points: 100, 1,000
and 5,000 lines of 1 MB images, and 1,000 lines of 4 MB images. Target: peak
RSS under 300 MB at every point, flat in N.

Two ways to run a batch (``--via``):

* ``python``: one ``RunComfy`` session, default limits, requests built with
  ``ImageToVideo.from_file`` from a generator and handed to
  ``client.stream`` (drawn lazily as jobs finish) when the library has it,
  else to ``submit_many`` (which takes a list);
* ``cli``: ``runcomfy-async run --batch FILE --output OUT`` on a JSON-lines
  batch file naming the images.

The images are written to a temporary folder before each point and removed
after it (``--keep`` keeps them). The emulator's own peak RSS (``VmHWM``) is
reported too: if it grows with N, the emulator keeps what it was sent.

Run ``python benchmarks/batch_memory.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import TOKEN, Emulator, print_table, write_json

SELF = Path(__file__).resolve()
HERE = SELF.parent
ROOT = HERE.parent
TARGET_MB = 300.0
DEFAULT_POINTS = "100x1,1000x1,5000x1,1000x4"
QUICK_POINTS = "50x1,300x1,100x4"


# -- images ------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def noise_png(megabytes: float, rng: random.Random) -> bytes:
    """Return a valid RGB PNG of random pixels, about *megabytes* MB (1e6 bytes) large.

    Random pixels do not compress, and the image data is stored (zlib level
    0), so the file is as large as its pixels and takes no time to deflate.
    """
    side = int(((megabytes * 1e6) / 3) ** 0.5)
    row = 1 + 3 * side  # a filter byte, then the pixels
    raw = bytearray(rng.randbytes(row * side))
    raw[::row] = bytes(side)  # filter type 0 (none) on every row
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(bytes(raw), 0)),
            _chunk(b"IEND", b""),
        )
    )


def write_batch(folder: Path, lines: int, megabytes: float, seed: int) -> Path:
    """Write *lines* distinct images and a JSON-lines batch naming them; return the batch."""
    rng = random.Random(seed)
    batch = folder / "batch.jsonl"
    with batch.open("w", encoding="utf-8") as out:
        for number in range(lines):
            name = f"img-{number:05d}.png"
            (folder / name).write_bytes(noise_png(megabytes, rng))
            line = {"prompt": f"batch memory line {number}", "image": name, "seed": number}
            out.write(json.dumps(line) + "\n")
    return batch


# -- the client side (a subprocess) ---------------------------------------------------------


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


async def _child(batch: Path, concurrency: int | None) -> dict[str, Any]:
    from runcomfy_async import ImageToVideo, Limits, RunComfy  # noqa: PLC0415

    base_rss = _rss_mb()
    folder = batch.parent

    def requests() -> Iterator[ImageToVideo]:
        with batch.open(encoding="utf-8") as lines:
            for text in lines:
                line = json.loads(text)
                yield ImageToVideo.from_file(
                    folder / line["image"], prompt=line["prompt"], seed=line["seed"]
                )

    succeeded = failed = 0
    started = time.perf_counter()
    limits = Limits() if concurrency is None else Limits(max_concurrent_requests=concurrency)
    async with RunComfy(limits=limits) as client:
        if hasattr(client, "stream"):
            drawn = "stream"
            async for job in client.stream(requests()):
                if job.exception() is None:
                    succeeded += 1
                else:
                    failed += 1
        else:
            drawn = "submit_many"
            jobs = client.submit_many(requests())
            for outcome in await client.gather(jobs):
                if isinstance(outcome, Exception):
                    failed += 1
                else:
                    succeeded += 1
    return {
        "succeeded": succeeded,
        "failed": failed,
        "drawn_by": drawn,
        "seconds": time.perf_counter() - started,
        "rss_after_import_mb": base_rss,
        "peak_rss_self_mb": _rss_mb(),
    }


# -- the parent ------------------------------------------------------------------------------


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("img-*.png"))


def _detail(via: str, code: int, out: str, folder: Path) -> dict[str, Any]:
    """What the client said: its own JSON line (python), or its results file (cli)."""
    if via == "python":
        return json.loads(out.strip().splitlines()[-1]) if code == 0 else {}
    results = folder / "results.jsonl"
    written = results.read_text(encoding="utf-8").splitlines() if results.exists() else []
    succeeded = sum(json.loads(line).get("status") == "succeeded" for line in written)
    return {"succeeded": succeeded, "failed": len(written) - succeeded}


def _run_client(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, str, str]:
    """Run a client process; return its exit code, its own peak RSS (MB), stdout, stderr."""
    out_path, err_path = cwd / "client.out", cwd / "client.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err)
        # wait4, not Popen.wait: it also returns the child's own resource usage.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024
    return (
        process.returncode,
        usage.ru_maxrss * scale / 1e6,
        out_path.read_text(encoding="utf-8", errors="replace"),
        err_path.read_text(encoding="utf-8", errors="replace"),
    )


async def _point(lines: int, megabytes: float, ns: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="batch-memory-", dir=ns.tmp))
    try:
        made = time.perf_counter()
        batch = await asyncio.to_thread(write_batch, folder, lines, megabytes, ns.seed)
        image_bytes = await asyncio.to_thread(_folder_bytes, folder)
        made = time.perf_counter() - made
        async with Emulator(time_scale=ns.time_scale, run_time=f"fixed:{ns.run_time}") as fake:
            env = {
                **os.environ,
                "RUNCOMFY_API_TOKEN": TOKEN,
                "RUNCOMFY_MODEL_API_BASE_URL": fake.base_url,
                "PYTHONPATH": str(ROOT),
            }
            if ns.via == "python":
                args = [sys.executable, str(SELF), "--child", str(batch)]
                if ns.concurrency is not None:
                    args += ["--concurrency", str(ns.concurrency)]
            else:
                args = [sys.executable, "-m", "runcomfy_async", "run", "--batch", str(batch)]
                args += ["--output", str(folder / "results.jsonl")]
                if ns.concurrency is not None:
                    args += ["--max-concurrent-requests", str(ns.concurrency)]
            code, peak, out, err = await asyncio.to_thread(_run_client, args, env, folder)
            emulator_peak = _vm_hwm_mb(fake.pid)
            stats = await fake.stats() if hasattr(fake, "stats") else {}
        detail = await asyncio.to_thread(_detail, ns.via, code, out, folder)
        return {
            "lines": lines,
            "image_mb": megabytes,
            "image_bytes_total": image_bytes,
            "generate_seconds": made,
            "via": ns.via,
            "concurrency": ns.concurrency,
            "exit_code": code,
            "peak_rss_mb": peak,
            "emulator_peak_rss_mb": emulator_peak,
            "emulator_stats": stats,
            "stderr_tail": err[-2000:] if code else "",
            **detail,
        }
    finally:
        if ns.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _points(text: str) -> list[tuple[int, float]]:
    points = []
    for part in text.split(","):
        lines, _, size = part.partition("x")
        points.append((int(lines), float(size or 1)))
    return points


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--points", default=DEFAULT_POINTS, help=f"LINESxMB,... (default {DEFAULT_POINTS})")
    add("--quick", action="store_true", help=f"small points ({QUICK_POINTS}), < 1 min")
    add("--via", choices=("python", "cli"), default="python", help="client entry point")
    add(
        "--concurrency",
        type=int,
        default=None,
        help="max_concurrent_requests (default: the library's)",
    )
    add("--time-scale", type=float, default=0.01, help="emulator --time-scale (default 0.01)")
    add("--run-time", type=float, default=10.0, help="nominal run time per job, s (default 10)")
    add("--seed", type=int, default=7, help="seed of the image pixels")
    add("--tmp", default=None, help="folder for the temporary images (default: the system's)")
    add("--keep", action="store_true", help="keep the generated images")
    add("--json", type=Path, default=None, help="write the figures here")
    add("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


async def _main(ns: argparse.Namespace) -> int:
    points = _points(QUICK_POINTS if ns.quick else ns.points)
    rows = []
    for lines, megabytes in points:
        print(f"... {lines} lines x {megabytes:g} MB via {ns.via}", file=sys.stderr, flush=True)
        row = await _point(lines, megabytes, ns)
        rows.append(row)
        if row["exit_code"]:
            print(f"client exited {row['exit_code']}:\n{row['stderr_tail']}", file=sys.stderr)
    table = [
        [
            f"{r['lines']:,}",
            f"{r['image_mb']:g}",
            f"{r['image_bytes_total'] / 1e6:,.0f}",
            f"{r.get('succeeded', '?')}/{r['lines']}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_rss_mb'] / r['lines'] * 1000:.0f}",
            "-" if r["emulator_peak_rss_mb"] is None else f"{r['emulator_peak_rss_mb']:.0f}",
            "ok" if r["peak_rss_mb"] < TARGET_MB and not r["exit_code"] else "MISS",
        ]
        for r in rows
    ]
    print_table(
        [
            "lines",
            "MB/image",
            "MB of images",
            "succeeded",
            "client peak RSS MB",
            "KB/line",
            "emulator peak MB",
            f"< {TARGET_MB:.0f} MB",
        ],
        table,
    )
    print(f"max_concurrent_requests: {ns.concurrency or 'default'}")
    if rows and rows[0].get("drawn_by"):
        print(f"requests drawn by client.{rows[0]['drawn_by']}")
    if ns.json is not None:
        write_json(ns.json, {"benchmark": "batch_memory", "via": ns.via, "points": rows})
    return 0


def main() -> int:
    """Run the benchmark (or, with ``--child``, one client run)."""
    ns = _parser().parse_args()
    if ns.child is not None:
        print(json.dumps(asyncio.run(_child(ns.child, ns.concurrency))), flush=True)
        return 0
    return asyncio.run(_main(ns))


if __name__ == "__main__":
    sys.exit(main())
