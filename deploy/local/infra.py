#!/usr/bin/env python3
"""Local single-node Kafka 3.9.1 (KRaft) + Cassandra 5.0.8 from Maven Central jars.

Usage (run with the project venv so the readiness probes can import aiokafka/cassandra):

    .venv/bin/python deploy/local/infra.py fetch|up|start|down|stop|status|clean [kafka|cassandra|all]
    .venv/bin/python deploy/local/infra.py kill kafka|cassandra

Importable from test fixtures without a package:

    spec = importlib.util.spec_from_file_location("infra", "deploy/local/infra.py")
    infra = importlib.util.module_from_spec(spec); spec.loader.exec_module(infra)
    infra.up(["cassandra", "kafka"]); infra.status(["kafka"]); infra.down(["kafka", "cassandra"])

Only the standard library is imported at module level; aiokafka and cassandra-driver are imported
lazily inside the probe functions. Configuration comes from environment variables (read at call
time, all optional) -- see ``Config.from_env`` and deploy/local/README.md.
"""
import argparse
import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent          # <repo>/deploy/local
REPO = HERE.parent.parent                       # <repo>
NAMES = ("cassandra", "kafka")                  # start order; stop order is reversed
PROBE_TOPIC = "_prefstream_probe"

KAFKA_MAIN = "kafka.Kafka"
CASSANDRA_MAIN = "org.apache.cassandra.service.CassandraDaemon"
MAIN_CLASS = {"kafka": KAFKA_MAIN, "cassandra": CASSANDRA_MAIN}
# the jar whose presence proves lib/ holds the server
KEY_JAR = {"kafka": "kafka_2.13-*.jar", "cassandra": "cassandra-all-*.jar"}
DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
FETCH_MARKER = ".fetched"

# -XX:TieredStopAtLevel=1 (C1 only) was measured to start both servers faster on the 2-core
# box and to use less CPU while they warm up; see README.md "Startup times".
COMMON_JVM = ["-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
KAFKA_JVM = [
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15",
]
CASSANDRA_JVM = [
    "-Xss256k", "-ea", "-da:net.openhft...",
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:MaxGCPauseMillis=300", "-XX:InitiatingHeapOccupancyPercent=70",
    "-XX:+UseThreadPriorities", "-XX:+ExitOnOutOfMemoryError", "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true", "-Dchronicle.analytics.disable=true",
]

log = logging.getLogger("prefstream.infra")


class InfraError(RuntimeError):
    """A server could not be fetched, started, probed or stopped; the message says why."""


def say(msg: str) -> None:
    print(f"[infra] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

def _env_int(key: str, default: int) -> int:
    raw = os.environ.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InfraError(f"{key}={raw!r} is not an integer") from None


def _env_float(key: str, default: float) -> float:
    raw = os.environ.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InfraError(f"{key}={raw!r} is not a number") from None


@dataclasses.dataclass
class Config:
    run_dir: Path
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    cassandra_jmx_port: int = 7199
    kafka_heap: str = "768m"
    cassandra_heap: str = "1G"
    kafka_timeout: float = 90.0
    cassandra_timeout: float = 180.0
    kafka_grace: float = 30.0
    cassandra_grace: float = 45.0
    kafka_jvm_opts: list[str] = dataclasses.field(default_factory=list)
    cassandra_jvm_opts: list[str] = dataclasses.field(default_factory=list)
    # secure mode: TLS + SASL/password authentication from a PKI directory (see `pki`)
    secure_dir: Path | None = None
    kafka_secure_port: int = 9094
    kafka_mtls_port: int = 9095

    @classmethod
    def from_env(cls) -> "Config":
        e = os.environ.get
        run_dir = Path(e("PREFSTREAM_RUN_DIR") or (REPO / "run")).expanduser()
        if not run_dir.is_absolute():
            run_dir = Path.cwd() / run_dir
        return cls(
            run_dir=run_dir.resolve(),
            kafka_port=_env_int("PREFSTREAM_KAFKA_PORT", 9092),
            kafka_controller_port=_env_int("PREFSTREAM_KAFKA_CONTROLLER_PORT", 9093),
            cassandra_port=_env_int("PREFSTREAM_CASSANDRA_PORT", 9042),
            cassandra_storage_port=_env_int("PREFSTREAM_CASSANDRA_STORAGE_PORT", 7000),
            cassandra_jmx_port=_env_int("PREFSTREAM_CASSANDRA_JMX_PORT", 7199),
            kafka_heap=(e("PREFSTREAM_KAFKA_HEAP") or "768m").strip(),
            cassandra_heap=(e("PREFSTREAM_CASSANDRA_HEAP") or "1G").strip(),
            kafka_timeout=_env_float("PREFSTREAM_KAFKA_TIMEOUT", 90.0),
            cassandra_timeout=_env_float("PREFSTREAM_CASSANDRA_TIMEOUT", 180.0),
            kafka_grace=_env_float("PREFSTREAM_KAFKA_GRACE", 30.0),
            cassandra_grace=_env_float("PREFSTREAM_CASSANDRA_GRACE", 45.0),
            kafka_jvm_opts=(e("PREFSTREAM_KAFKA_JVM_OPTS") or "").split(),
            cassandra_jvm_opts=(e("PREFSTREAM_CASSANDRA_JVM_OPTS") or "").split(),
            secure_dir=Path(e("PREFSTREAM_SECURE_DIR")).expanduser().resolve()
            if e("PREFSTREAM_SECURE_DIR") else None,
            kafka_secure_port=_env_int("PREFSTREAM_KAFKA_SECURE_PORT", 9094),
            kafka_mtls_port=_env_int("PREFSTREAM_KAFKA_MTLS_PORT", 9095),
        )

    # per-server views ------------------------------------------------------------------------
    def ports(self, name: str) -> dict[str, int]:
        if name == "kafka":
            ports = {"kafka": self.kafka_port, "controller": self.kafka_controller_port}
            if self.secure_dir:
                ports["sasl_ssl"] = self.kafka_secure_port
                ports["ssl_mtls"] = self.kafka_mtls_port
            return ports
        return {"native": self.cassandra_port, "storage": self.cassandra_storage_port,
                "jmx": self.cassandra_jmx_port}

    def client_port(self, name: str) -> int:
        return self.kafka_port if name == "kafka" else self.cassandra_port

    def timeout(self, name: str) -> float:
        return self.kafka_timeout if name == "kafka" else self.cassandra_timeout

    def grace(self, name: str) -> float:
        return self.kafka_grace if name == "kafka" else self.cassandra_grace

    def server_dir(self, name: str) -> Path:
        return self.run_dir / name

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.out"


def _names(names) -> list[str]:
    """Normalise None / "all" / "kafka" / ["kafka", ...] into start order."""
    if names is None:
        names = ["all"]
    elif isinstance(names, str):
        names = [names]
    out: set[str] = set()
    for n in names:
        if n == "all":
            out.update(NAMES)
        elif n in NAMES:
            out.add(n)
        else:
            raise InfraError(f"unknown server {n!r}; expected kafka, cassandra or all")
    return [n for n in NAMES if n in out]


def lib_dir(name: str) -> Path:
    return HERE / name / "lib"


# --------------------------------------------------------------------------------------------
# fetch (mvn copy-dependencies)
# --------------------------------------------------------------------------------------------

def _pom_hash(name: str) -> str:
    h = hashlib.sha256((HERE / name / "pom.xml").read_bytes())
    h.update(DEP_PLUGIN.encode())
    return h.hexdigest()


def lib_complete(name: str) -> bool:
    lib = lib_dir(name)
    marker = lib / FETCH_MARKER
    try:
        if marker.read_text().strip() != _pom_hash(name):
            return False
    except OSError:
        return False
    return any(lib.glob(KEY_JAR[name]))


def _run_mvn(name: str, out_dir: Path, offline: bool, log_path: Path) -> tuple[int, int]:
    """Run copy-dependencies; return (exit code, number of artifacts downloaded)."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise InfraError("mvn not found on PATH: install Maven (Debian: apt-get install -y maven), "
                         "then re-run `infra.py fetch`")
    cmd = [mvn, "-B", "-f", str(HERE / name / "pom.xml"), DEP_PLUGIN,
           f"-DoutputDirectory={out_dir}", "-DincludeScope=runtime"]
    if offline:
        cmd.insert(2, "-o")
    downloaded = 0
    last_report = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as lf:
        lf.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace",
                                cwd=str(HERE / name))
        assert proc.stdout is not None
        for line in proc.stdout:
            lf.write(line)
            if "Downloaded from" in line:
                downloaded += 1
                if time.monotonic() - last_report > 3:
                    last_report = time.monotonic()
                    say(f"  {name}: {downloaded} files downloaded so far ...")
        rc = proc.wait()
    return rc, downloaded


def fetch(names=None, force: bool = False) -> None:
    """Resolve the server jars into deploy/local/<name>/lib with Maven (skip when complete)."""
    for name in _names(names):
        lib = lib_dir(name)
        if not force and lib_complete(name):
            say(f"{name}: jars already in {_rel(lib)} ({_count_jars(lib)} jars), skipping fetch")
            continue
        tmp = lib.with_name("lib.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mvn_log = tmp / ".mvn.log"
        t0 = time.monotonic()
        say(f"{name}: resolving jars from {_rel(HERE / name / 'pom.xml')} "
            f"(mvn offline, using ~/.m2) ...")
        rc, _ = _run_mvn(name, tmp, offline=True, log_path=mvn_log)
        if rc != 0:
            say(f"{name}: not all artifacts are in ~/.m2; downloading from Maven Central ...")
            for f in tmp.glob("*.jar"):
                f.unlink()
            rc, n = _run_mvn(name, tmp, offline=False, log_path=mvn_log)
            if rc != 0:
                tail = _tail(mvn_log, 30)
                keep = lib.with_name("fetch-failed.log")
                shutil.copyfile(mvn_log, keep)
                shutil.rmtree(tmp, ignore_errors=True)
                raise InfraError(
                    f"{name}: mvn failed (exit {rc}); last lines:\n{tail}\n"
                    f"full log: {keep}\n"
                    "what to do: check that Maven Central is reachable (proxy settings in "
                    "~/.m2/settings.xml), that the pom is valid, then re-run "
                    f"`infra.py fetch {name}`; `mvn -X -f {_rel(HERE / name / 'pom.xml')} "
                    f"{DEP_PLUGIN}` shows details")
            say(f"{name}: downloaded {n} files")
        if not any(tmp.glob(KEY_JAR[name])):
            raise InfraError(f"{name}: mvn succeeded but {KEY_JAR[name]} is missing in {tmp}")
        (tmp / FETCH_MARKER).write_text(_pom_hash(name) + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        (lib.with_name("fetch-failed.log")).unlink(missing_ok=True)
        say(f"{name}: {_count_jars(lib)} jars ({_du_mb(lib):.0f} MB) in {_rel(lib)} "
            f"after {time.monotonic() - t0:.1f}s")


def _count_jars(d: Path) -> int:
    return sum(1 for _ in d.glob("*.jar"))


def _du_mb(d: Path) -> float:
    return sum(f.stat().st_size for f in d.glob("*.jar")) / 1e6


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------------------------
# java, ports, processes
# --------------------------------------------------------------------------------------------

_java_cache: dict[str, tuple[str, int]] = {}


def java_bin() -> tuple[str, int]:
    """Return (path to java, major version); Cassandra 5.0 needs 11 or 17, Kafka 3.9 11+."""
    home = os.environ.get("JAVA_HOME")
    cand = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() \
        else shutil.which("java")
    if not cand:
        raise InfraError("java not found (no JAVA_HOME/bin/java and no java on PATH): install "
                         "a Java 17 JDK (Debian: apt-get install -y openjdk-17-jdk-headless)")
    if cand in _java_cache:
        return cand, _java_cache[cand][1]
    try:
        out = subprocess.run([cand, "-version"], capture_output=True, text=True,
                             timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"cannot run {cand} -version: {exc}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise InfraError(f"cannot parse the version of {cand}: {out.strip()[:200]}")
    major = int(m.group(1))
    if major == 1 and m.group(2):
        major = int(m.group(2))
    _java_cache[cand] = (cand, major)
    return cand, major


def _check_java(name: str) -> str:
    java, major = java_bin()
    if name == "cassandra" and major not in (11, 17):
        raise InfraError(f"cassandra: {java} is Java {major}; Cassandra 5.0 runs only on Java 11 "
                         "or 17 -- set JAVA_HOME to a Java 17 JDK")
    if name == "kafka" and major < 11:
        raise InfraError(f"kafka: {java} is Java {major}; Kafka 3.9 needs Java 11+ (use 17)")
    return java


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        socket.create_connection((host, port), timeout).close()
        return True
    except OSError:
        return False


# Popen objects of servers started by this Python process, so they are reaped (no zombies
# that would look alive to kill(pid, 0)) when a test fixture calls up() and down() in-process.
_children: dict[int, subprocess.Popen] = {}


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie whose parent has not reaped it yet is dead for our purposes -- but only once all
    # its threads are gone: after SIGKILL a JVM's leader thread turns Z while hundreds of other
    # threads are still exiting and still hold the listening sockets.
    try:
        status_text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    state = re.search(r"^State:\s+(\S)", status_text, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", status_text, re.M)
    if state and state.group(1) in "ZX":
        return bool(threads and int(threads.group(1)) > 1)
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ours(pid: int, name: str, cfg: Config) -> bool:
    """Guard against PID reuse: the process must be our server for this run dir."""
    cmd = _cmdline(pid)
    if not cmd:
        return _pid_alive(pid)          # no /proc (not Linux): trust the pid file
    joined = " ".join(cmd)
    return MAIN_CLASS[name] in cmd and str(cfg.server_dir(name)) in joined


def read_pid(name: str, cfg: Config | None = None) -> int | None:
    """PID of the running server, or None (a stale pid file is removed)."""
    cfg = cfg or Config.from_env()
    pf = cfg.pid_file(name)
    try:
        pid = int(pf.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and _is_ours(pid, name, cfg):
        return pid
    pf.unlink(missing_ok=True)
    return None


def _signal_group(pid: int, sig: int) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        if pgid == pid:                 # started with start_new_session: pid leads its group
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_dead(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _pid_alive(pid):
            return True
        time.sleep(0.2)
    return not _pid_alive(pid)


def _wait_ports_free(cfg: Config, name: str, timeout: float) -> dict[str, int]:
    """Wait until the server's ports can be bound; return those still busy."""
    end = time.monotonic() + timeout
    while True:
        busy = {k: p for k, p in cfg.ports(name).items() if not port_free(p)}
        if not busy or time.monotonic() >= end:
            return busy
        time.sleep(0.2)


def _tail(path: Path, n: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


def _read_log(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2 * 1024 * 1024))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# (regex on the log, likely cause) -- first match wins, most specific first
_CAUSES = [
    (r"Address already in use|BindException|Failed to bind|Port already in use",
     "port in use: another process listens on one of this server's ports (see `ss -ltnp`); "
     "stop it or choose other ports with the PREFSTREAM_*_PORT variables"),
    (r"Invalid cluster\.id|Cluster ID .* doesn't match|clusterId .* does not match|"
     r"cluster id .* mismatch",
     "stale cluster id in the data dir: run `infra.py clean kafka` (wipes the data)"),
    (r"Saved cluster name .* != configured name|Cannot start node if snitch's (data center|rack)",
     "stale cluster name / topology in the data dir: run `infra.py clean cassandra`"),
    (r"OutOfMemoryError: (Java heap space|GC overhead)",
     "out of memory: the Java heap is too small -- raise PREFSTREAM_{NAME}_HEAP"),
    (r"OutOfMemoryError:|Cannot allocate memory|insufficient memory|"
     r"Could not reserve enough space",
     "out of memory (native/machine): free memory or lower PREFSTREAM_KAFKA_HEAP / "
     "PREFSTREAM_CASSANDRA_HEAP"),
    (r"UnsupportedClassVersionError|Unrecognized option|Unsupported major\.minor|"
     r"Could not create the Java Virtual Machine|Unrecognized VM option",
     "java has the wrong version (needs Java 17) or a JVM flag is not understood: "
     "set JAVA_HOME to a Java 17 JDK"),
    (r"Could not find or load main class|ClassNotFoundException|NoClassDefFoundError|"
     r"Error opening zip file|agent library failed to init|"
     r"Error occurred during initialization of VM",
     "jars missing or broken: run `infra.py fetch --force`"),
    (r"No space left on device", "disk full: free space under PREFSTREAM_RUN_DIR"),
    (r"Invalid yaml|Unknown property|Cannot create property|ConfigurationException",
     "cassandra.yaml rejected: check deploy/local/cassandra/cassandra.yaml.template"),
    (r"JNA failing to initialize|UnsatisfiedLinkError",
     "native library failed to load (JNA/netty): is /tmp mounted noexec?"),
    (r"AccessDeniedException|Permission denied",
     "permission problem in the run dir: check ownership of PREFSTREAM_RUN_DIR"),
    (r"Failed to acquire lock|is in use by another process",
     "data dir locked by another server instance: stop it (infra.py down) or use another "
     "PREFSTREAM_RUN_DIR"),
]


def likely_cause(name: str, text: str, *, exited: bool, timed_out: bool) -> str:
    # ignore the command line the launcher writes at the top ("# <date> java ...")
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("# "))
    for pattern, cause in _CAUSES:
        if re.search(pattern, text):
            return cause.replace("{NAME}", name.upper())
    if exited:
        return (f"{name} exited during startup for an unrecognised reason: read the log above; "
                f"if it mentions the data dir, `infra.py clean {name}` resets it")
    if timed_out:
        return (f"{name} is still starting or hung: the machine may be overloaded (2 cores); "
                f"raise PREFSTREAM_{name.upper()}_TIMEOUT or check the log")
    return "unknown"


# --------------------------------------------------------------------------------------------
# rendering configs and building command lines
# --------------------------------------------------------------------------------------------

def _render(template: Path, dest: Path, **values) -> None:
    text = string.Template(template.read_text()).substitute(**values)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(dest)


def new_cluster_id() -> str:
    """A Kafka Uuid: 22 chars of url-safe base64, as `kafka-storage random-uuid` prints.

    Like Kafka's Uuid.randomUuid(), never start with '-': StorageTool's argument parser would
    take such an id for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_cluster_id(cfg: Config) -> str:
    """The id is kept next to the data dir so restarts reuse it."""
    f = cfg.server_dir("kafka") / "cluster.id"
    try:
        cid = f.read_text().strip()
        if cid:
            return cid
    except OSError:
        pass
    cid = new_cluster_id()
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(cid + "\n")
    return cid


def _kafka_prepare(cfg: Config, java: str) -> list[str]:
    sd = cfg.server_dir("kafka")
    data = sd / "data"
    props = sd / "server.properties"
    _render(HERE / "kafka" / "server.properties.template", props,
            kafka_port=cfg.kafka_port, controller_port=cfg.kafka_controller_port,
            data_dir=str(data))
    scram: list[str] = []
    if cfg.secure_dir:
        pki = load_pki(cfg.secure_dir)
        with open(props, "a") as fh:
            fh.write(_kafka_secure_properties(cfg, pki))
        scram = [arg for user, pw in pki["users"].items()
                 for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                 for arg in ("--add-scram", f"{mech}=[name={user},password={pw}]")]
    common = [*COMMON_JVM,
              f"-Dlog4j.configuration=file:{HERE / 'kafka' / 'log4j.properties'}",
              f"-Dkafka.logs.dir={cfg.run_dir / 'logs'}"]
    classpath = ["-cp", str(lib_dir("kafka")) + "/*"]
    cid = _kafka_cluster_id(cfg)
    meta = data / "meta.properties"
    if meta.exists():
        m = re.search(r"^cluster\.id=(.*)$", meta.read_text(), re.M)
        if m and m.group(1).strip() != cid:
            raise InfraError(
                f"kafka: stale cluster id: {meta} has cluster.id={m.group(1).strip()} but "
                f"{sd / 'cluster.id'} says {cid}. Likely cause: stale cluster id in data dir -> "
                "run `infra.py clean kafka`")
    else:
        data.mkdir(parents=True, exist_ok=True)
        say(f"kafka: formatting KRaft storage in {data} (cluster id {cid}) ...")
        t0 = time.monotonic()
        r = subprocess.run([java, "-Xmx256m", *common, *classpath, "kafka.tools.StorageTool",
                            "format", "-t", cid, "-c", str(props), "--ignore-formatted",
                            *scram],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0:
            raise InfraError(f"kafka: storage format failed (exit {r.returncode}):\n{out}\n"
                             "Likely cause: " + likely_cause("kafka", out, exited=True,
                                                             timed_out=False))
        say(f"kafka: formatted in {time.monotonic() - t0:.1f}s")
    return [java, f"-Xms{cfg.kafka_heap}", f"-Xmx{cfg.kafka_heap}", *KAFKA_JVM, *common,
            *cfg.kafka_jvm_opts, *classpath, KAFKA_MAIN, str(props)]


def _jvm17_flags() -> list[str]:
    flags: list[str] = []
    for line in (HERE / "cassandra" / "jvm17.flags").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            flags.extend(line.split())
    return flags


def _cassandra_prepare(cfg: Config, java: str) -> list[str]:
    sd = cfg.server_dir("cassandra")
    for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
        (sd / sub).mkdir(parents=True, exist_ok=True)
    yaml = sd / "cassandra.yaml"
    secure: list[str] = []
    _render(HERE / "cassandra" / "cassandra.yaml.template", yaml,
            native_port=cfg.cassandra_port, storage_port=cfg.cassandra_storage_port,
            data_root=str(sd),
            authenticator="PasswordAuthenticator" if cfg.secure_dir else "AllowAllAuthenticator")
    if cfg.secure_dir:
        pki = load_pki(cfg.secure_dir)
        with open(yaml, "a") as fh:
            fh.write(_cassandra_secure_yaml(pki))
        # the default superuser (cassandra/cassandra) exists at once, not after 10 s
        secure = ["-Dcassandra.superuser_setup_delay_ms=0"]
    jamm = sorted(lib_dir("cassandra").glob("jamm-*.jar"))
    if not jamm:
        raise InfraError("cassandra: jamm-*.jar missing from lib/: run `infra.py fetch --force "
                         "cassandra`")
    logs = cfg.run_dir / "logs"
    return [java, f"-Xms{cfg.cassandra_heap}", f"-Xmx{cfg.cassandra_heap}", *COMMON_JVM,
            *CASSANDRA_JVM, f"-javaagent:{jamm[-1]}",
            *_jvm17_flags(),
            f"-Dcassandra.config={yaml.as_uri()}",
            f"-Dcassandra.storagedir={sd}",
            f"-Dcassandra.logdir={logs}",
            f"-Dlogback.configurationFile={(HERE / 'cassandra' / 'logback.xml').as_uri()}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.jmx.local.port={cfg.cassandra_jmx_port}",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.unsafesystem=true",
            *secure,
            *cfg.cassandra_jvm_opts,
            "-cp", str(lib_dir("cassandra")) + "/*", CASSANDRA_MAIN]


# --------------------------------------------------------------------------------------------
# secure mode: a private CA, TLS listeners and authenticated users (PREFSTREAM_SECURE_DIR)
# --------------------------------------------------------------------------------------------

PKI_FILES = ("ca.pem", "server.p12", "server.password", "users.json", "client.pem",
             "client.key", "client.password")
CASSANDRA_SUPERUSER = ("cassandra", "cassandra")  # PasswordAuthenticator's default superuser


def make_pki(directory: Path, users: tuple[str, ...] = ("prefstream",), days: int = 30) -> dict:
    """Write a fresh test PKI into ``directory``: ``ca.pem`` (a new CA), ``server.p12`` (a
    PKCS#12 keystore with a server key and a certificate for localhost / 127.0.0.1 signed by
    that CA), ``server.password``, ``users.json`` (each user with a random password) and a
    client certificate for mutual TLS (``client.pem``; ``client.key`` encrypted with
    ``client.password``).
    Needs the ``cryptography`` package (the dev extra).  Returns :func:`load_pki`."""
    import datetime
    import ipaddress
    import secrets

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import pkcs12
        from cryptography.x509.oid import NameOID
    except ImportError as exc:
        raise InfraError("secure mode generates its CA with the Python package `cryptography`: "
                         "run this launcher with the project venv (`make venv`)") from exc

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prefstream test CA")])

    def issue(subject: "x509.Name", key, *extensions: tuple) -> "x509.Certificate":
        """A certificate for ``key`` signed by the CA, valid from 5 minutes ago for ``days``."""
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=days)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    def usage(purpose) -> tuple:
        return x509.ExtendedKeyUsage([purpose]), False

    ca = issue(ca_name, ca_key,
               (x509.BasicConstraints(ca=True, path_length=0), True),
               (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False), True))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), key,
                 (x509.SubjectAlternativeName([
                     x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                  False),
                 usage(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, users[0])]), client_key,
                   usage(x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH))
    client_password = secrets.token_urlsafe(12)
    password = secrets.token_urlsafe(18)
    keystore = pkcs12.serialize_key_and_certificates(
        b"server", key, cert, [ca], serialization.BestAvailableEncryption(password.encode()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.p12").write_bytes(keystore)
    (directory / "server.password").write_text(password + "\n")
    (directory / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (directory / "client.key").write_bytes(client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(client_password.encode())))
    (directory / "client.password").write_text(client_password + "\n")
    (directory / "users.json").write_text(json.dumps(
        {u: secrets.token_urlsafe(12) for u in users}, indent=2) + "\n")
    for f in PKI_FILES:
        (directory / f).chmod(0o600)
    say(f"secure mode: wrote a new test CA, server keystore and users to {directory}")
    return load_pki(directory)


def load_pki(directory: Path) -> dict:
    """The PKI in ``directory`` (generated by :func:`make_pki` when it has none yet)."""
    if not (directory / "ca.pem").exists():
        return make_pki(directory)
    missing = [f for f in PKI_FILES if not (directory / f).exists()]
    if missing:
        raise InfraError(f"secure mode: {directory} lacks {', '.join(missing)}: delete the "
                         "directory to get a new PKI, or run `infra.py pki --dir DIR`")
    return {"dir": directory, "ca": directory / "ca.pem", "keystore": directory / "server.p12",
            "client_cert": directory / "client.pem", "client_key": directory / "client.key",
            "client_password": (directory / "client.password").read_text().strip(),
            "password": (directory / "server.password").read_text().strip(),
            "users": json.loads((directory / "users.json").read_text())}


def _kafka_secure_properties(cfg: Config, pki: dict) -> str:
    """A SASL_SSL listener beside the PLAINTEXT one (which stays the inter-broker listener):
    TLS with the PKI's keystore; PLAIN and SCRAM-SHA-256/512 for the PKI's users (the SCRAM
    credentials are written into the metadata log when the storage is formatted).  And an SSL
    listener that requires a client certificate signed by the PKI's CA (mutual TLS)."""
    plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in pki["users"].items())
    login = "org.apache.kafka.common.security"
    plaintext = f"PLAINTEXT://127.0.0.1:{cfg.kafka_port}"
    sasl_ssl = f"SASL_SSL://127.0.0.1:{cfg.kafka_secure_port}"
    mtls = f"SSL://127.0.0.1:{cfg.kafka_mtls_port}"
    controller = f"CONTROLLER://127.0.0.1:{cfg.kafka_controller_port}"
    props = {
        "listeners": f"{plaintext},{controller},{sasl_ssl},{mtls}",
        "advertised.listeners": f"{plaintext},{sasl_ssl},{mtls}",
        "listener.security.protocol.map":
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config":
            f"{login}.plain.PlainLoginModule required {plain_users};",
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config":
            f"{login}.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            f"{login}.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(pki["keystore"]),
        "ssl.keystore.password": pki["password"],
        "ssl.key.password": pki["password"],
        "ssl.client.auth": "none",
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.ssl.ssl.truststore.type": "PEM",
        "listener.name.ssl.ssl.truststore.location": str(pki["ca"]),
    }
    lines = [f"# --- secure mode (PREFSTREAM_SECURE_DIR={pki['dir']}): later keys win"]
    return "\n" + "\n".join([*lines, *(f"{k}={v}" for k, v in props.items())]) + "\n"


def _cassandra_secure_yaml(pki: dict) -> str:
    """Required client encryption on the native port with the PKI's keystore (the
    authenticator is set in the template)."""
    return f"""
# --- secure mode (PREFSTREAM_SECURE_DIR={pki['dir']})
client_encryption_options:
  enabled: true
  optional: false
  keystore: {pki['keystore']}
  keystore_password: "{pki['password']}"
  store_type: PKCS12
  require_client_auth: false
"""


# --------------------------------------------------------------------------------------------
# protocol-level probes (lazy imports of aiokafka / cassandra-driver)
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet(*logger_names: str):
    """Silence client-library connection noise while polling a server that is still booting."""
    saved = []
    for n in logger_names:
        lg = logging.getLogger(n)
        saved.append((lg, lg.level))
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _run_coro(make_coro, timeout: float):
    """asyncio.run, also when the caller (a pytest-asyncio fixture) already runs a loop."""
    async def guarded():
        return await asyncio.wait_for(make_coro(), timeout)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(guarded())
    box: dict = {}

    def target():
        try:
            box["v"] = asyncio.run(guarded())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout + 10)
    if "e" in box:
        raise box["e"]
    return box.get("v")


def _client_tls(pki: dict):
    import ssl
    return ssl.create_default_context(cafile=str(pki["ca"]))


def probe_kafka(port: int | None = None, timeout: float = 20.0, cfg: Config | None = None) -> str:
    """list_topics via the admin client, then send_and_wait to the probe topic; in secure mode
    also list_topics on the SASL_SSL listener as the first user (SCRAM-SHA-512)."""
    cfg = cfg or Config.from_env()
    port = port or cfg.kafka_port
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    bootstrap = f"127.0.0.1:{port}"
    ms = int(timeout * 1000)

    async def go():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ms)
        await admin.start()
        try:
            topics = await admin.list_topics()
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=ms,
                                    acks="all")
        await producer.start()
        try:
            md = await producer.send_and_wait(PROBE_TOPIC, b"probe")
        finally:
            await producer.stop()
        detail = f"{len(topics)} topics, probe write at {md.topic}[{md.partition}]@{md.offset}"
        if cfg.secure_dir:
            pki = load_pki(cfg.secure_dir)
            user, password = next(iter(pki["users"].items()))
            admin = AIOKafkaAdminClient(
                bootstrap_servers=f"127.0.0.1:{cfg.kafka_secure_port}", request_timeout_ms=ms,
                security_protocol="SASL_SSL", ssl_context=_client_tls(pki),
                sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user,
                sasl_plain_password=password)
            await admin.start()
            try:
                await admin.list_topics()
            finally:
                await admin.close()
            detail += f"; SASL_SSL on {cfg.kafka_secure_port} as {user}"
        return detail

    return _run_coro(go, timeout)


def probe_cassandra(port: int | None = None, timeout: float = 20.0,
                    cfg: Config | None = None) -> str:
    """cassandra-driver connect + SELECT release_version FROM system.local.  In secure mode the
    probe connects with TLS as the default superuser and creates the PKI's users (login roles,
    idempotent), so a ready server accepts them."""
    cfg = cfg or Config.from_env()
    port = port or cfg.cassandra_port
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy
    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="datacenter1"),
        request_timeout=timeout)
    secure: dict = {}
    pki = load_pki(cfg.secure_dir) if cfg.secure_dir else None
    if pki:
        from cassandra.auth import PlainTextAuthProvider
        secure = {"ssl_context": _client_tls(pki),
                  "auth_provider": PlainTextAuthProvider(*CASSANDRA_SUPERUSER)}
    cluster = Cluster(["127.0.0.1"], port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                      connect_timeout=timeout, control_connection_timeout=timeout, **secure)
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        detail = f"release_version {row.release_version}"
        if pki:
            for user, password in pki["users"].items():
                session.execute(f"CREATE ROLE IF NOT EXISTS {user} WITH PASSWORD = %s "
                                "AND LOGIN = true", (password,))
            detail += f"; TLS + PasswordAuthenticator, roles {', '.join(pki['users'])}"
        return detail
    finally:
        cluster.shutdown()


def _check_probe_deps(name: str) -> None:
    import importlib.util
    mod = "aiokafka" if name == "kafka" else "cassandra"
    if importlib.util.find_spec(mod) is None:
        raise InfraError(
            f"{name}: the readiness probe needs the Python package {mod!r}, which "
            f"{sys.executable} cannot import: run this launcher with the project venv "
            "(.venv/bin/python deploy/local/infra.py ...; `make venv` creates it)")


def probe(name: str, cfg: Config | None = None, timeout: float = 20.0) -> str:
    """Run the protocol probe once; raise on failure, return a short description."""
    cfg = cfg or Config.from_env()
    port = cfg.client_port(name)
    if not port_open(port):
        raise InfraError(f"port {port} not accepting connections")
    if name == "kafka":
        return probe_kafka(port, timeout, cfg)
    return probe_cassandra(port, timeout, cfg)


# --------------------------------------------------------------------------------------------
# the public operations
# --------------------------------------------------------------------------------------------

def wait_ready(name: str, timeout: float | None = None, cfg: Config | None = None,
               pid: int | None = None, t0: float | None = None,
               kill_on_timeout: bool = False) -> float:
    """Poll the protocol probe until it passes; return seconds since ``t0`` (default: now).

    Raises InfraError (with the log tail and a likely cause) if the process dies or the timeout
    passes; ``up`` also kills a server that timed out (``kill_on_timeout``). ``pid`` defaults to
    the recorded pid.
    """
    cfg = cfg or Config.from_env()
    timeout = cfg.timeout(name) if timeout is None else timeout
    t0 = time.monotonic() if t0 is None else t0
    pid = pid or read_pid(name, cfg)
    if pid is None:
        raise InfraError(f"{name} is not running (no live pid in {cfg.pid_file(name)})")
    deadline = t0 + timeout
    last_err = ""
    while True:
        if not _pid_alive(pid):
            _fail(name, cfg, pid, exited=True, kill=False,
                  detail="the process exited during startup")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not port_open(cfg.client_port(name), timeout=0.5):
            last_err = f"port {cfg.client_port(name)} not accepting connections yet"
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        try:
            with _quiet("aiokafka", "kafka", "cassandra"):
                probe(name, cfg, timeout=max(2.0, min(15.0, remaining)))
            return time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not ready yet"
            last_err = f"{type(exc).__name__}: {exc}"
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    _fail(name, cfg, pid, exited=False, kill=kill_on_timeout,
          detail=f"not ready after {timeout:.0f}s (last probe error: {last_err[:300]})")
    raise AssertionError("unreachable")


def _fail(name: str, cfg: Config, pid: int, *, exited: bool, kill: bool, detail: str) -> None:
    logf = cfg.log_file(name)
    if kill:                            # don't leave a half-started server behind
        _signal_group(pid, signal.SIGKILL)
        _wait_dead(pid, 10)
    if exited or kill:
        cfg.pid_file(name).unlink(missing_ok=True)
    cause = likely_cause(name, _read_log(logf), exited=exited, timed_out=not exited)
    raise InfraError(
        f"{name} failed to start: {detail}\n"
        f"--- last 40 lines of {logf} ---\n{_tail(logf, 40)}\n--- end of log ---\n"
        f"Likely cause: {cause}" + (f"\n(killed pid {pid})" if kill else ""))


def _start_one(name: str, cfg: Config) -> None:
    pid = read_pid(name, cfg)
    if pid is not None:
        try:
            with _quiet("aiokafka", "kafka", "cassandra"):
                probe(name, cfg, timeout=10)
            say(f"{name}: already running, pid {pid}")
            return
        except Exception:  # noqa: BLE001
            say(f"{name}: pid {pid} is running but not ready yet; waiting ...")
            took = wait_ready(name, cfg=cfg, pid=pid, kill_on_timeout=True)
            say(f"{name}: ready after {took:.1f}s more (pid {pid})")
            return
    busy = _wait_ports_free(cfg, name, 3)     # a just-killed server may still be exiting
    if busy:
        what = ", ".join(f"{k} {p}" for k, p in busy.items())
        raise InfraError(
            f"{name}: port(s) already in use: {what} (not by a {name} recorded in "
            f"{cfg.pid_file(name)}). Likely cause: port in use -- another server or a server from "
            f"another PREFSTREAM_RUN_DIR; see `ss -ltnp`, or set PREFSTREAM_{name.upper()}_PORT*")
    _check_probe_deps(name)
    java = _check_java(name)
    if not lib_complete(name):
        fetch([name])
    cmd = _kafka_prepare(cfg, java) if name == "kafka" else _cassandra_prepare(cfg, java)
    logf = cfg.log_file(name)
    logf.parent.mkdir(parents=True, exist_ok=True)
    if logf.exists() and logf.stat().st_size:
        logf.replace(logf.with_name(logf.name + ".prev"))
    t0 = time.monotonic()
    with open(logf, "ab") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(cfg.server_dir(name)), close_fds=True)
    _children[proc.pid] = proc
    cfg.pid_file(name).write_text(f"{proc.pid}\n")
    say(f"{name}: started pid {proc.pid} (ports {_fmt_ports(cfg, name)}), log {logf}; "
        f"waiting up to {cfg.timeout(name):.0f}s for the protocol probe ...")
    took = wait_ready(name, cfg=cfg, pid=proc.pid, t0=t0, kill_on_timeout=True)
    say(f"{name}: ready in {took:.1f}s (pid {proc.pid})")


def _fmt_ports(cfg: Config, name: str) -> str:
    return ", ".join(f"{k} {p}" for k, p in cfg.ports(name).items())


@contextlib.contextmanager
def _locked(cfg: Config):
    """Serialise up/down/kill/clean on one run dir (e.g. several pytest-xdist workers)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.run_dir / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another infra.py operation on {cfg.run_dir} ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def up(names=None) -> None:
    """Fetch if needed, start Cassandra then Kafka, wait for protocol-level readiness.

    Raises InfraError (message includes the log tail and a likely cause) on failure.
    """
    cfg = Config.from_env()
    with _locked(cfg):
        for name in _names(names):
            _start_one(name, cfg)


start = up


def _stop_one(name: str, cfg: Config, grace: float | None, sig: int = signal.SIGTERM) -> None:
    pid = read_pid(name, cfg)
    if pid is None:
        say(f"{name}: not running")
        cfg.pid_file(name).unlink(missing_ok=True)
        return
    grace = cfg.grace(name) if grace is None else grace
    t0 = time.monotonic()
    if sig == signal.SIGKILL:
        say(f"{name}: SIGKILL to pid {pid}")
        _signal_group(pid, signal.SIGKILL)
        _wait_dead(pid, 10)
    else:
        say(f"{name}: SIGTERM to pid {pid}, waiting up to {grace:g}s ...")
        _signal_group(pid, signal.SIGTERM)
        if not _wait_dead(pid, grace):
            say(f"{name}: still alive after {grace:g}s, SIGKILL")
            _signal_group(pid, signal.SIGKILL)
            _wait_dead(pid, 10)
    if _pid_alive(pid):
        raise InfraError(f"{name}: pid {pid} survived SIGKILL")
    _children.pop(pid, None)
    _wait_ports_free(cfg, name, 10)
    cfg.pid_file(name).unlink(missing_ok=True)
    say(f"{name}: stopped in {time.monotonic() - t0:.1f}s")


def down(names=None, grace: float | None = None) -> None:
    """SIGTERM each server's process group (Kafka first), SIGKILL after the grace period."""
    cfg = Config.from_env()
    sel = _names(names)
    if not cfg.run_dir.exists():
        for name in reversed(sel):
            say(f"{name}: not running")
        return
    with _locked(cfg):
        for name in reversed(sel):
            _stop_one(name, cfg, grace)


stop = down


def kill(name: str) -> None:
    """SIGKILL a server immediately (fault injection)."""
    if name not in NAMES:
        raise InfraError(f"kill takes one server name (kafka or cassandra), not {name!r}")
    cfg = Config.from_env()
    if not cfg.run_dir.exists():
        say(f"{name}: not running")
        return
    with _locked(cfg):
        _stop_one(name, cfg, 0, sig=signal.SIGKILL)


def status(names=None, probe_timeout: float = 10.0) -> dict:
    """{name: {running, pid, ports, healthy, detail}} for each requested server."""
    cfg = Config.from_env()
    result = {}
    for name in _names(names):
        pid = read_pid(name, cfg)
        healthy, detail = False, "not running"
        if pid is not None:
            try:
                with _quiet("aiokafka", "kafka", "cassandra"):
                    detail = probe(name, cfg, timeout=probe_timeout)
                healthy = True
            except Exception as exc:  # noqa: BLE001
                detail = f"probe failed: {type(exc).__name__}: {exc}"[:300]
        result[name] = {"running": pid is not None, "pid": pid, "ports": cfg.ports(name),
                        "healthy": healthy, "detail": detail}
    return result


def clean(names=None) -> None:
    """down, then delete the servers' data dirs, rendered configs and logs."""
    cfg = Config.from_env()
    sel = _names(names)
    down(sel)
    if not cfg.run_dir.exists():
        return
    with _locked(cfg):
        for name in sel:
            if read_pid(name, cfg) is not None:    # someone started it again meanwhile
                raise InfraError(f"{name} is running again; not deleting its data")
            d = cfg.server_dir(name)
            if d.exists():
                shutil.rmtree(d)
                say(f"{name}: deleted {d}")
            for f in cfg.log_file(name).parent.glob(f"{name}.out*"):
                f.unlink()
    # remove the run dir itself when nothing else is left in it
    logs = cfg.run_dir / "logs"
    with contextlib.suppress(OSError):
        logs.rmdir()
    leftovers = [p for p in cfg.run_dir.iterdir() if p.name != ".lock"]
    if not leftovers:
        (cfg.run_dir / ".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            cfg.run_dir.rmdir()
            say(f"deleted {cfg.run_dir}")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="infra.py",
        description="Local Kafka 3.9.1 (KRaft) + Cassandra 5.0.8 for prefstream.")
    ap.add_argument("command", choices=["fetch", "up", "start", "down", "stop", "status",
                                        "clean", "kill", "pki"])
    ap.add_argument("names", nargs="*", default=["all"], help="kafka, cassandra or all")
    ap.add_argument("--force", action="store_true", help="fetch: re-resolve even if complete")
    ap.add_argument("--timeout", type=float, help="up: readiness timeout in seconds "
                    "(default: PREFSTREAM_KAFKA_TIMEOUT 90 / PREFSTREAM_CASSANDRA_TIMEOUT 180)")
    ap.add_argument("--json", action="store_true", help="status: print JSON")
    ap.add_argument("--dir", type=Path, help="pki: where to write a new test CA, server keystore "
                    "and users (then `PREFSTREAM_SECURE_DIR=DIR infra.py up`)")
    ap.add_argument("--grace", type=float, help="down: seconds between SIGTERM and SIGKILL "
                    "(default: PREFSTREAM_KAFKA_GRACE 30 / PREFSTREAM_CASSANDRA_GRACE 45)")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.timeout is not None:
        os.environ["PREFSTREAM_KAFKA_TIMEOUT"] = os.environ["PREFSTREAM_CASSANDRA_TIMEOUT"] = \
            str(args.timeout)
    try:
        cmd = args.command
        if cmd == "fetch":
            fetch(args.names, force=args.force)
        elif cmd in ("up", "start"):
            t0 = time.monotonic()
            up(args.names)
            say(f"all up after {time.monotonic() - t0:.1f}s")
        elif cmd in ("down", "stop"):
            down(args.names, grace=args.grace)
        elif cmd == "clean":
            clean(args.names)
        elif cmd == "pki":
            if args.dir is None:
                ap.error("pki needs --dir DIR")
            make_pki(args.dir.expanduser().resolve())
        elif cmd == "kill":
            if len(args.names) != 1 or args.names[0] not in NAMES:
                ap.error("kill takes exactly one of: kafka, cassandra")
            kill(args.names[0])
        elif cmd == "status":
            st = status(args.names)
            if args.json:
                print(json.dumps(st, indent=2))
            for name, s in ([] if args.json else st.items()):
                state = f"running, pid {s['pid']}" if s["running"] else "stopped"
                health = "healthy" if s["healthy"] else "NOT healthy"
                ports = ", ".join(f"{k} {p}" for k, p in s["ports"].items())
                print(f"{name:9s} {state:22s} {health:12s} ports: {ports}  ({s['detail']})")
            return 0 if all(s["healthy"] for s in st.values()) else 1
    except InfraError as exc:
        print(f"[infra] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
