"""``python -m runcomfy_async.testing``: run the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Any, get_args

import anyio
import attrs

from ._app import FakeRunComfy
from ._cmdline import fault_value
from ._config import EmulatorConfig, FaultName, Faults, Fixed, LogNormal, RunTime, Uniform

if TYPE_CHECKING:
    from collections.abc import Sequence


def _run_time(text: str) -> RunTime:
    name, _, numbers = text.partition(":")
    try:
        values = [float(v) for v in numbers.split(",") if v]
        if name == "fixed" and len(values) == 1:
            return Fixed(values[0])
        if name == "uniform" and len(values) == 2:
            return Uniform(values[0], values[1])
        if name == "lognormal" and len(values) <= 2:
            return LogNormal(*values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    raise argparse.ArgumentTypeError(
        f"{text!r}: use fixed:SECONDS, uniform:LOW,HIGH or lognormal:MEAN[,CV]"
    )


def _fault(text: str) -> tuple[str, object]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=VALUE")
    try:
        return name, fault_value(name, raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _fault_name(text: str) -> str:
    if text not in get_args(FaultName):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fault name")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runcomfy_async.testing",
        description="Run the RunComfy Model API emulator.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on")
    add("--port", type=int, default=8765, help="port (0 picks a free one)")
    add("--token", default="test-token", help="the account's API token")
    add("--other-token", action="append", default=[], help="another account's token")
    add("--time-scale", type=float, default=1.0, help="multiplies nominal durations")
    add("--slots", type=int, default=None, help="jobs running at once per account")
    add("--run-time", type=_run_time, default=None, help="e.g. fixed:10, uniform:5,20")
    add("--seed", type=int, default=0, help="seed of the random generators")
    add("--failure-rate", type=float, default=0.0, help="share of jobs that fail")
    add("--balance", type=float, default=None, help="account balance in USD")
    add("--latency", type=float, default=0.0, help="nominal seconds per API answer")
    add("--output", choices=("video", "videos"), default="video")
    add("--rate-limit", type=float, default=None, help="hidden limit, requests/s")
    add("--rate-burst", type=float, default=1.0, help="hidden limit's burst size")
    add("--fault", type=_fault, action="append", default=[], help="Faults NAME=VALUE")
    add("--submit-delay", type=float, default=None, help="hold accepted submits' answers, s")
    add("--slow-file", type=float, default=None, help="output files' bytes per second")
    add("--big-file", type=int, default=None, help="output files' size in bytes")
    add("--chaos", type=float, default=None, help="every fault, at this total rate")
    add(
        "--chaos-exclude",
        type=_fault_name,
        action="append",
        default=[],
        help="a fault --chaos leaves out",
    )
    add("--no-record", action="store_true", help="count requests, keep none")
    add("--no-record-bodies", action="store_true", help="keep requests without bodies")
    return parser


def config_from_args(
    argv: Sequence[str] | None = None,
) -> tuple[EmulatorConfig, str, int]:
    """Parse the command line into a config, a host and a port."""
    ns = _parser().parse_args(argv)
    switches: dict[str, Any] = {"rate_limit": ns.rate_limit, "rate_burst": ns.rate_burst}
    for name in ("submit_delay", "slow_file", "big_file"):
        if getattr(ns, name) is not None:
            switches[name] = getattr(ns, name)
    # --fault comes last: it overrides the shortcuts and the chaos rates.
    switches.update(ns.fault)
    try:
        if ns.chaos is not None:
            faults = attrs.evolve(Faults.chaos(ns.chaos, exclude=ns.chaos_exclude), **switches)
        else:
            faults = Faults(**switches)
    except ValueError as exc:
        _parser().error(str(exc))
    config = EmulatorConfig(
        token=ns.token,
        other_tokens=ns.other_token,
        time_scale=ns.time_scale,
        slots=ns.slots,
        run_time=ns.run_time or LogNormal(),
        seed=ns.seed,
        failure_rate=ns.failure_rate,
        balance=ns.balance,
        latency=ns.latency,
        output=ns.output,
        faults=faults,
        record=not ns.no_record,
        record_bodies=not ns.no_record_bodies,
    )
    return config, ns.host, ns.port


async def serve(config: EmulatorConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, after announcing the address on stdout."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        fake = FakeRunComfy(config)
        await fake.start(host, port)
        try:
            # Benchmarks parse this line from our stdout: keep it, flush it.
            print(f"RunComfy emulator listening on {fake.base_url}", flush=True)  # noqa: T201
            async for _ in signals:
                break
        finally:
            await fake.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator from the command line."""
    config, host, port = config_from_args(argv)
    try:
        anyio.run(serve, config, host, port)
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
