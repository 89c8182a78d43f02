#!/usr/bin/env python3
"""Login-overhead benchmark for `nfs-hostchange postlogin` (issue 6).

    python3 benches/login.py                            # build as is, measure, print Markdown
    python3 benches/login.py --dist                     # the deployment build (scripts/build-dist)
    python3 benches/login.py --variant static+lto+cgu1  # the same for one release-profile variant
    python3 benches/login.py --variants                 # build and compare every variant
    python3 benches/login.py --compare a=BIN b=BIN      # compare prebuilt wrapper binaries
    python3 benches/login.py --syscalls-only            # system calls only (seconds)

Measures, on this machine and within one run (so that only ratios matter):

1. Time per login hop, steady state, COMMAND = /bin/true: running COMMAND
   directly, the bare exec hop `/usr/bin/env COMMAND`, the wrapper
   (`nfs-hostchange postlogin --config FILE COMMAND`), the plain shell
   implementation benches/postlogin.sh (run by /bin/sh, and by bash for
   reference), and `nfs-hostchange --version` (start-up cost). All commands
   are timed interleaved, in a new random order every round, from one
   process that spawns each (posix_spawn) and waits for it (wait4): wall
   time, CPU time (user + system of the child and what it reaped, which
   load from other processes does not inflate) and minor page faults. The
   spawner's own cost is the same for every command and cancels out of the
   "added over direct" columns. --hyperfine adds a `hyperfine -N` cross-check.
2. System calls per login from `strace -f -y -k`: the calls before the exec
   of COMMAND (dynamic loader included), the calls between the start of
   `main` and the exec, and the calls on "NFS" (paths under INDEX, or
   descriptors opened there) split into lookups (path resolutions), calls on
   open descriptors, and writes; for a first login, steady state, a host
   change, and migration mode (steady, and moving a list index in).
3. With --variants: binary size, start-up cost, login time, page faults and
   system calls for candidate release profiles (LTO, codegen units, panic
   strategy, opt-level, static linking), each built in its own target
   directory under /tmp through CARGO_PROFILE_RELEASE_* and RUSTFLAGS (the
   tree is not modified).

The fixture is a temporary directory under /tmp standing in for NFS (INDEX)
and LISTINDEX roots under /dev/shm, owned by an unprivileged user; when run
as root, every login runs as that user (default uid/gid 65534), as under
`script-login -d`. Needs Linux, Python 3.11 and strace (the system-call part
is skipped without it). Nothing outside the fixture and the target
directories is touched; the fixture is removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import re
import resource  # noqa: F401 - os.wait4 needs it, and the bench user may not be able to import it later
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USER = "alice"
COMMAND = "/bin/true"
ENV_HOP = "/usr/bin/env"


def log(msg: str) -> None:
    print(f"login.py: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Building


@dataclass
class Variant:
    name: str
    profile: dict[str, str] = field(default_factory=dict)
    static: bool = False
    note: str = ""
    rustflags: str = ""


VARIANTS = [
    Variant("default", {}, note="the profile in Cargo.toml"),
    Variant("lto+cgu1", {"LTO": "true", "CODEGEN_UNITS": "1"}),
    Variant(
        "lto+cgu1+abort",
        {"LTO": "true", "CODEGEN_UNITS": "1", "PANIC": "abort"},
        note="loses catch_unwind",
    ),
    Variant("opt-s+lto+cgu1", {"OPT_LEVEL": "s", "LTO": "true", "CODEGEN_UNITS": "1"}),
    Variant("opt-z+lto+cgu1", {"OPT_LEVEL": "z", "LTO": "true", "CODEGEN_UNITS": "1"}),
    Variant("static", {}, static=True, note="+crt-static"),
    Variant("static+lto+cgu1", {"LTO": "true", "CODEGEN_UNITS": "1"}, static=True),
    Variant(
        "static+lto+cgu1+abort",
        {"LTO": "true", "CODEGEN_UNITS": "1", "PANIC": "abort"},
        static=True,
        note="loses catch_unwind",
    ),
    Variant("static+opt-s+lto+cgu1", {"OPT_LEVEL": "s", "LTO": "true", "CODEGEN_UNITS": "1"}, static=True),
    Variant(
        "static-nopie+lto+cgu1",
        {"LTO": "true", "CODEGEN_UNITS": "1"},
        static=True,
        rustflags="-C relocation-model=static",
        note="no ASLR for the binary",
    ),
    Variant("static+lto+cgu1+strip", {"LTO": "true", "CODEGEN_UNITS": "1", "STRIP": "true"}, static=True),
]

TRIPLE = "x86_64-unknown-linux-gnu"


def build(variant: Variant | None, target_dir: Path | None, tree: Path = REPO) -> tuple[Path, list[str]]:
    """Builds the release binary; returns its path and glibc's link warnings."""
    env = dict(os.environ)
    cmd = ["cargo", "build", "--release", "--bin", "nfs-hostchange", "--message-format=json-render-diagnostics"]
    if target_dir is not None:
        env["CARGO_TARGET_DIR"] = str(target_dir)
    if variant is not None:
        for key, value in variant.profile.items():
            env[f"CARGO_PROFILE_RELEASE_{key}"] = value
        flags = variant.rustflags + (" -C target-feature=+crt-static" if variant.static else "")
        if flags.strip():
            env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " " + flags).strip()
        if variant.static:
            # With an explicit --target, RUSTFLAGS stay off build scripts and
            # proc-macros, which cannot be linked statically.
            cmd += ["--target", TRIPLE]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"login.py: build failed: {' '.join(cmd)}")
    binary = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            binary = Path(msg["executable"])
    if binary is None:
        raise SystemExit("login.py: cargo built no executable")
    # Cargo does not show the linker's warnings on success; glibc's link
    # warnings (NSS and dlopen in static binaries) stay in the binary.
    return binary, link_warnings_of(binary.read_bytes())


def linkage(binary: Path) -> str:
    with open(binary, "rb") as f:
        head = f.read(4096)
    return "dynamically linked" if b"ld-linux" in head else "statically linked"


def link_warnings_of(data: str | bytes) -> list[str]:
    """The functions glibc warns about at static link time."""
    if isinstance(data, str):
        data = data.encode(errors="replace")
    found = re.findall(rb"Using '(\w+)' in statically linked applications", data)
    return sorted({f.decode() for f in found})


# --------------------------------------------------------------------------
# The fixture


class Fixture:
    """A fake NFS mail store under /tmp and LISTINDEX roots under /dev/shm."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid
        self.base = Path(tempfile.mkdtemp(prefix="nfshc-bench.", dir="/tmp"))
        self.shm = Path(tempfile.mkdtemp(prefix="nfshc-bench.", dir="/dev/shm"))
        os.chmod(self.base, 0o755)
        self.nfs = self.base / "nfs"
        self.home = self.nfs / USER
        self.index = self.home / "Maildir"  # INDEX = the mail root
        self.lroot = self.shm / "wrapper"  # the wrapper's LISTINDEX root
        # The shell script keeps its own INDEX and LISTINDEX: its record has
        # another format, and sharing would turn every login into a change.
        self.sh_index = self.nfs / "sh" / USER / "Maildir"
        self.sh_lroot = self.shm / "script"
        self.bin = self.base / "bin"
        self.out = self.base / "out"
        for d in (self.index, self.sh_index, self.lroot, self.sh_lroot, self.bin, self.out):
            d.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5(USER.encode()).digest()
        self.listindex = self.lroot / f"{digest[7]:02x}" / USER  # %2.256Nu/%u
        self.script = self.bin / "postlogin.sh"
        shutil.copy(REPO / "benches" / "postlogin.sh", self.script)
        os.chmod(self.script, 0o755)
        location = f"maildir:~/Maildir:LISTINDEX={self.lroot}/%2.256Nu/%u/dovecot.list.index"
        self.conf = self.base / "steady.conf"
        self.conf.write_text(f"mail_location = {location}\nnfs_hostchange_log = stderr\n")
        self.mconf = self.base / "migration.conf"
        self.mconf.write_text(
            f"mail_location = {location}\nnfs_hostchange_log = stderr\nnfs_hostchange_migration = yes\n"
        )
        for p in (self.conf, self.mconf):
            os.chmod(p, 0o644)
        for top in (self.nfs, self.shm, self.out):
            for dirpath, dirnames, filenames in os.walk(top):
                for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                    os.lchown(name, uid, gid)
        os.chmod(self.shm, 0o700)
        os.chmod(self.lroot, 0o700)
        os.chmod(self.sh_lroot, 0o700)
        # What script-login passes (the environment is cleared; no PATH),
        # plus the two settings of the shell implementation.
        self.env = {
            "USER": USER,
            "IP": "127.0.0.1",
            "LOCAL_IP": "127.0.0.1",
            "HOME": str(self.home),
            "UID": str(uid),
            "GID": str(gid),
            "USERDB_KEYS": "userdb_home userdb_uid userdb_gid",
            "NFSHC_LISTINDEX_ROOT": str(self.sh_lroot),
            "NFSHC_INDEX": str(self.sh_index),
        }
        self.binaries: dict[str, Path] = {}

    def add_binary(self, name: str, path: Path) -> Path:
        """Copies a binary into the fixture, where the bench user can run it."""
        dest = self.bin / name
        shutil.copy(path, dest)
        os.chmod(dest, 0o755)
        self.binaries[name] = dest
        return dest

    def wrapper(self, binary: Path, conf: Path | None = None) -> list[str]:
        return [str(binary), "postlogin", "--config", str(conf or self.conf), COMMAND]

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)


def drop_privileges(uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def run_as(fx: Fixture, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Runs one login as the bench user, with the login environment."""
    kwargs = {}
    if os.geteuid() == 0:
        kwargs = dict(user=fx.uid, group=fx.gid, extra_groups=[])
    proc = subprocess.run(
        argv, env=fx.env, stdin=subprocess.DEVNULL, capture_output=True, cwd="/", **kwargs
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"login.py: {argv} exited {proc.returncode}: {proc.stderr!r}")
    return proc


def stamp_of(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def change_host(fx: Fixture, index: Path) -> None:
    """Another backend logs the user in: a new INDEX/.lasthost (new inode)."""
    tmp = index / ".lasthost.other"
    tmp.write_text(f"backend-b {os.urandom(16).hex()}\n")
    os.chown(tmp, fx.uid, fx.gid)
    os.rename(tmp, index / ".lasthost")


def plant_list_index(fx: Fixture, directory: Path, names: list[str]) -> None:
    for name in names:
        p = directory / name
        p.write_bytes(b"\0" * 4096)
        os.chown(p, fx.uid, fx.gid)


# --------------------------------------------------------------------------
# Timing


def timing_loop(spec: dict) -> dict:
    """Runs in a child process, as the bench user. Spawns each command once
    per round, in a random order, and records the wall time of spawn + wait,
    the CPU time and the minor page faults that wait4 reports."""
    commands: dict[str, list[str]] = spec["commands"]
    env = spec["env"]
    names = list(commands)
    devnull = os.open("/dev/null", os.O_RDWR)
    errlog = os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(errlog, 2)
    os.chdir("/")
    rng = random.Random(1)
    times: dict[str, list[int]] = {n: [] for n in names}
    cpu: dict[str, list[int]] = {n: [] for n in names}
    faults: dict[str, list[int]] = {n: [] for n in names}
    failures: dict[str, int] = {n: 0 for n in names}
    spawn, wait4, clock = os.posix_spawn, os.wait4, time.perf_counter_ns

    def one(name: str) -> tuple[int, int, int]:
        argv = commands[name]
        t0 = clock()
        pid = spawn(argv[0], argv, env)
        _, status, ru = wait4(pid, 0)
        t1 = clock()
        if status != 0:
            failures[name] += 1
        return t1 - t0, round((ru.ru_utime + ru.ru_stime) * 1e9), ru.ru_minflt

    gc.disable()
    for _ in range(spec["warmup"]):
        for name in names:
            one(name)
    deadline = time.monotonic() + spec["seconds"]
    rounds = 0
    order = names[:]
    while rounds < spec["runs"] and (rounds < spec["min_runs"] or time.monotonic() < deadline):
        rng.shuffle(order)
        for name in order:
            wall, used, minflt = one(name)
            times[name].append(wall)
            cpu[name].append(used)
            faults[name].append(minflt)
        rounds += 1
    return {"times": times, "cpu": cpu, "faults": faults, "failures": failures, "rounds": rounds}


def run_timing(fx: Fixture, commands: dict[str, list[str]], args) -> dict:
    spec = {
        "commands": commands,
        "env": fx.env,
        "warmup": args.warmup,
        "runs": args.runs,
        "min_runs": min(args.min_runs, args.runs),
        "seconds": args.seconds,
        "stderr": str(fx.out / "timing.stderr"),
    }
    result_path = fx.out / "timing.json"
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges(fx.uid, fx.gid)
            result = timing_loop(spec)
            with open(result_path, "w") as f:
                json.dump(result, f)
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - report anything from the child
            try:
                os.write(2, f"login.py: timing child: {e!r}\n".encode())
            finally:
                os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit("login.py: the timing loop failed")
    with open(result_path) as f:
        result = json.load(f)
    result["stderr_text"] = Path(spec["stderr"]).read_text(errors="replace")
    return result


def summary(ns: list[int]) -> dict:
    us = sorted(t / 1000 for t in ns)
    n = len(us)
    return {
        "n": n,
        "median": statistics.median(us),
        "mean": statistics.fmean(us),
        "p10": us[n // 10],
        "p90": us[(9 * n) // 10],
        "min": us[0],
    }


def ratio_ci(a: list[int], b: list[int], draws: int = 400) -> tuple[float, float]:
    """95% bootstrap interval of median(a) / median(b), resampling rounds."""
    rng = random.Random(2)
    n = len(a)
    ratios = []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median([a[i] for i in idx]) / statistics.median([b[i] for i in idx]))
    ratios.sort()
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


# --------------------------------------------------------------------------
# System calls

LINE = re.compile(r"^(\d+)\s+(.*)$")
CALL = re.compile(r"^([a-z_0-9]+)\((.*)$")
EXECVE = re.compile(r'^execve\("([^"]*)"')

WRITE_CALLS = {
    "write", "pwrite64", "writev", "pwritev", "pwritev2", "rename", "renameat", "renameat2",
    "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "fsync", "fdatasync", "ftruncate",
    "truncate", "utimensat", "utimes", "futimesat", "fchmod", "fchmodat", "chmod", "fchown",
    "fchownat", "chown", "lchown", "link", "linkat", "symlink", "symlinkat", "fallocate",
    "setxattr", "fsetxattr", "lsetxattr", "removexattr", "fremovexattr", "mknod", "mknodat",
    "creat", "sync_file_range",
}  # fmt: skip
PATH_CALLS = {
    "open", "openat", "openat2", "stat", "lstat", "newfstatat", "statx", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "chdir", "getxattr", "lgetxattr", "listxattr",
    "llistxattr", "execve", "statfs",
}  # fmt: skip
WRITE_OPEN = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC")
MAIN_FIRST = re.compile(r"^fcntl\(2(<[^>]*>)?, F_GETFD\)")


@dataclass
class Call:
    pid: int
    name: str
    text: str
    frames: list[str]


def parse_trace(path: Path) -> list[Call]:
    calls: list[Call] = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith(" > "):
            if calls:
                calls[-1].frames.append(raw[3:])
            continue
        m = LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.startswith(("+++", "---", "<...")):
            continue  # exits, signals, and the second half of split calls
        c = CALL.match(rest)
        if c:
            calls.append(Call(pid, c.group(1), rest, []))
    return calls


@dataclass
class Count:
    total: int = 0
    main: int | None = None
    nfs_lookup: int = 0
    nfs_fd: int = 0
    nfs_write: int = 0
    processes: int = 1
    by_name: dict[str, int] = field(default_factory=dict)
    main_calls: list[str] = field(default_factory=list)


def classify_nfs(call: Call, nfs: str) -> str | None:
    """'lookup', 'fd' or 'write' for a call on NFS; None for a local call."""
    if nfs not in call.text:
        return None
    name, text = call.name, call.text
    if name in ("copy_file_range", "sendfile", "splice"):
        # Which side is NFS: copy_file_range/splice(in, ..., out), sendfile(out, in).
        args = text[len(name) + 1 :].split(", ")
        src = args[1] if name == "sendfile" else args[0]
        return "fd" if nfs in src else "write"
    if name in ("open", "openat", "openat2"):
        return "write" if WRITE_OPEN.search(text.split(") =")[0]) else "lookup"
    if name in WRITE_CALLS:
        return "write"
    if name in PATH_CALLS:
        if name in ("newfstatat", "statx") and '""' in text.split(", ")[1]:
            return "fd"  # fstat of an open descriptor (AT_EMPTY_PATH)
        return "lookup"
    return "fd"


def count_calls(calls: list[Call], program: str, nfs: str, main_binary: str | None) -> Count:
    """Counts the calls from the exec of `program` (excluded) to the exec of
    COMMAND (excluded), over every process in between."""
    start = next(
        i for i, c in enumerate(calls) if c.name == "execve" and EXECVE.match(c.text).group(1) == program
    )
    first_pid = calls[start].pid
    end = next(
        i
        for i in range(start + 1, len(calls))
        if calls[i].pid == first_pid
        and calls[i].name == "execve"
        and EXECVE.match(calls[i].text).group(1) == COMMAND
        and calls[i].text.rstrip().endswith("= 0")
    )
    window = calls[start + 1 : end]
    out = Count(total=len(window))
    out.processes = 1 + sum(1 for c in window if c.name in ("clone", "clone3", "fork", "vfork"))
    for c in window:
        kind = classify_nfs(c, nfs)
        if kind == "lookup":
            out.nfs_lookup += 1
        elif kind == "fd":
            out.nfs_fd += 1
        elif kind == "write":
            out.nfs_write += 1
    if main_binary is not None:
        # The first call with `main` on its stack. strace -k cannot unwind
        # through some of static glibc's system-call stubs, so the first
        # call of the wrapper's own code, fcntl(2, F_GETFD) (its logger
        # checking stderr), is a marker as well: whichever comes first.
        marker = re.compile(r"^" + re.escape(main_binary) + r"\(main\+0x")
        starts = [i for i, c in enumerate(window) if any(marker.match(f) for f in c.frames)][:1]
        starts += [i for i, c in enumerate(window) if MAIN_FIRST.match(c.text)][:1]
        if starts:
            i = min(starts)
            out.main = len(window) - i
            out.main_calls = [shorten(x.text) for x in window[i:]]
            for x in window[i:]:
                out.by_name[x.name] = out.by_name.get(x.name, 0) + 1
    return out


def shorten(text: str, width: int = 150) -> str:
    text = re.sub(r'"(\\[0-7x][0-9a-f]*|[^"]){40,}"(\.\.\.)?', '"…"', text)
    return text if len(text) <= width else text[: width - 1] + "…"


def strace_supports_k() -> bool:
    probe = subprocess.run(["strace", "-k", "-o", "/dev/null", COMMAND], capture_output=True)
    return probe.returncode == 0


def trace(fx: Fixture, argv: list[str], name: str, stacks: bool) -> list[Call]:
    out = fx.out / f"{name}.strace"
    cmd = ["strace", "-f", "-y", "-s", "64", "-o", str(out)]
    if stacks:
        cmd.insert(1, "-k")
    run_as(fx, cmd + argv)
    return parse_trace(out)


def syscall_scenarios(fx: Fixture, binary: Path, stacks: bool) -> dict[str, Count]:
    """Traces the env hop and the wrapper in each scenario. Leaves the
    fixture in steady state."""
    nfs = str(fx.nfs)
    res: dict[str, Count] = {}
    main_bin = str(binary) if stacks else None

    def wrap(name: str, conf: Path | None = None) -> None:
        calls = trace(fx, fx.wrapper(binary, conf), name, stacks)
        res[name] = count_calls(calls, str(binary), nfs, main_bin)

    calls = trace(fx, [ENV_HOP, COMMAND], "env", False)
    res["env"] = count_calls(calls, ENV_HOP, nfs, None)
    # A new user: no LISTINDEX directory, no INDEX/.lasthost.
    shutil.rmtree(fx.listindex.parent, ignore_errors=True)
    (fx.index / ".lasthost").unlink(missing_ok=True)
    wrap("first login")
    wrap("steady state")
    change_host(fx, fx.index)
    plant_list_index(fx, fx.listindex, ["dovecot.list.index", "dovecot.list.index.log"])
    wrap("host change")
    wrap("migration, steady", fx.mconf)
    plant_list_index(fx, fx.index, ["dovecot.list.index", "dovecot.list.index.log"])
    wrap("migration, moving", fx.mconf)
    run_as(fx, fx.wrapper(binary))  # steady again
    calls = trace(fx, [str(fx.script), COMMAND], "script", False)
    res["postlogin.sh, steady"] = count_calls(calls, str(fx.script), nfs, None)
    return res


# --------------------------------------------------------------------------
# Reports


def fmt_us(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def timing_table(result: dict, rows: list[tuple[str, str]]) -> list[str]:
    s = {k: summary(v) for k, v in result["times"].items()}
    c = {k: summary(v)["median"] for k, v in result["cpu"].items()}
    direct, env = s["direct"]["median"], s["env"]["median"]
    lines = [
        "| hop | wall median µs | wall p10–p90 µs | wall added over direct µs | wall vs `env` "
        "| CPU median µs | CPU added over direct µs | CPU vs `env` | page faults |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in rows:
        if key not in s:
            continue
        v = s[key]
        lines.append(
            f"| {label} | {fmt_us(v['median'])} | {fmt_us(v['p10'])}–{fmt_us(v['p90'])} | "
            f"{fmt_us(v['median'] - direct)} | {v['median'] / env:.3f} | {fmt_us(c[key])} | "
            f"{fmt_us(c[key] - c['direct'])} | {c[key] / c['env']:.3f} | {statistics.median(result['faults'][key]):.0f} |"
        )
    return lines


def syscall_table(res: dict[str, Count]) -> list[str]:
    lines = [
        "| login | calls before exec | main→exec | NFS lookups | NFS calls on open fds | NFS writes | processes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in res.items():
        label = "`env` hop" if name == "env" else name
        main = "" if c.main is None else str(c.main)
        if name == "env":
            lines.append(f"| {label} | {c.total} |  |  |  |  | 1 |")
        else:
            lines.append(
                f"| {label} | {c.total} | {main} | {c.nfs_lookup} | {c.nfs_fd} | {c.nfs_write} | {c.processes} |"
            )
    return lines


def goal(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main_report(args, fx: Fixture, binary: Path, size: int) -> None:
    wrapper = fx.add_binary("nfs-hostchange", binary)
    # One login each so that every timed one is steady state.
    run_as(fx, fx.wrapper(wrapper))
    run_as(fx, [str(fx.script), COMMAND])
    out: list[str] = []
    goals: list[str] = []

    if not args.syscalls_only:
        out += timing_section(args, fx, wrapper, size, goals)
    if shutil.which("strace"):
        stacks = strace_supports_k()
        log("tracing system calls" + ("" if stacks else " (strace -k unsupported: fcntl marker only)"))
        res = syscall_scenarios(fx, wrapper, stacks)
        out += syscall_section(res, goals)
    else:
        out += ["(strace is not installed: no system-call counts.)", ""]

    out += ["## Goals (issue 6)", "", "| goal | measured | |", "|---|---|---|"] + goals + [""]
    print("\n".join(out))


def timing_section(args, fx: Fixture, wrapper: Path, size: int, goals: list[str]) -> list[str]:
    before = (stamp_of(fx.index / ".lasthost")[0], stamp_of(fx.sh_index / ".lasthost")[0])
    commands = {
        "direct": [COMMAND],
        "env": [ENV_HOP, COMMAND],
        "wrapper": fx.wrapper(wrapper),
        "script": [str(fx.script), COMMAND],
        "bash": ["/bin/bash", str(fx.script), COMMAND],
        "version": [str(wrapper), "--version"],
    }
    if not os.access("/bin/bash", os.X_OK):
        del commands["bash"]
    log(f"timing {len(commands)} commands, up to {args.runs} rounds or {args.seconds:.0f} s")
    t0 = time.monotonic()
    result = run_timing(fx, commands, args)
    elapsed = time.monotonic() - t0
    after = (stamp_of(fx.index / ".lasthost")[0], stamp_of(fx.sh_index / ".lasthost")[0])

    s = {k: summary(v)["median"] for k, v in result["times"].items()}
    c = {k: summary(v)["median"] for k, v in result["cpu"].items()}
    for label, m, raw in (("wall", s, result["times"]), ("CPU", c, result["cpu"])):
        ratio = m["wrapper"] / m["env"]
        lo, hi = ratio_ci(raw["wrapper"], raw["env"])
        within = " (1.0 is inside the interval)" if lo <= 1.0 <= hi else ""
        goals.append(
            f"| wrapper / `env` hop ≤ 1.0 ({label}) | {ratio:.3f} (95% CI {lo:.3f}–{hi:.3f}) "
            f"| {goal(ratio <= 1.0)}{within} |"
        )
    for label, m in (("wall", s), ("CPU", c)):
        w, sc = m["wrapper"] - m["direct"], m["script"] - m["direct"]
        added = sc / w if w > 0 else float("inf")
        bound = sc / (m["env"] - m["direct"])
        goals.append(
            f"| (script − direct) / (wrapper − direct) ≥ 10 ({label}) | {added:.1f} "
            f"({fmt_us(sc)} / {fmt_us(w)} µs; a bare exec hop would get {bound:.1f}) | {goal(added >= 10)} |"
        )

    out = [
        "## Login overhead (steady state, COMMAND = /bin/true)",
        "",
        f"{result['rounds']} interleaved rounds after {args.warmup} warm-up rounds "
        f"({elapsed:.0f} s), run as uid {fx.uid}; wrapper: {args.built_as}, {size} bytes, "
        f"{linkage(wrapper)}. "
        "Wall: spawn-to-reap time seen by the timing process, so each includes the same "
        "fixed spawn cost (the `direct` row is that cost plus /bin/true). CPU: user + system "
        "time of the child and its descendants (wait4), which scheduling noise from other "
        "load on the machine does not inflate.",
        "",
    ]
    out += timing_table(
        result,
        [
            ("direct", "`/bin/true` directly"),
            ("env", "`/usr/bin/env /bin/true` (bare exec hop)"),
            ("wrapper", "`nfs-hostchange postlogin --config F /bin/true`"),
            ("script", "`benches/postlogin.sh /bin/true` (sh = dash)"),
            ("bash", "the same script run by bash (for reference)"),
            ("version", "`nfs-hostchange --version` (start-up)"),
        ],
    )
    out.append("")
    fails = {k: v for k, v in result["failures"].items() if v}
    notes = []
    if fails:
        notes.append(f"- non-zero exits: {fails}")
    if after != before:
        notes.append("- INDEX/.lasthost changed during the timing loop: not every login was steady state")
    if result["stderr_text"].strip():
        notes.append("- stderr during timing: " + " / ".join(result["stderr_text"].strip().splitlines()[:5]))
    if notes:
        out += ["Warnings:"] + notes + [""]
    if args.hyperfine and shutil.which("hyperfine"):
        out += run_hyperfine(fx, commands, args)
    return out


def syscall_section(res: dict[str, Count], goals: list[str]) -> list[str]:
    st, envc = res["steady state"], res["env"]
    goals.append(
        f"| steady state: 1 NFS lookup, 0 NFS writes | {st.nfs_lookup} lookup(s), "
        f"{st.nfs_write} write(s) | {goal(st.nfs_lookup == 1 and st.nfs_write == 0)} |"
    )
    goals.append(
        f"| steady state: fewer calls before exec than the `env` hop | {st.total} vs {envc.total} | "
        f"{goal(st.total < envc.total)} |"
    )
    if st.main is not None:
        goals.append(f"| steady state: main→exec under 25 calls | {st.main} | {goal(st.main < 25)} |")
    out = [
        "## System calls per login (`strace -f -y`)",
        "",
        "Calls before exec: every call after the program's own execve up to, not including, "
        "the execve of /bin/true (the dynamic loader included). main→exec: from the first call "
        "with `main` on its stack (`strace -k`), or the wrapper's first own call, "
        "fcntl(2, F_GETFD), if that comes first. NFS: calls on paths under INDEX or on "
        "descriptors opened there; lookups resolve a path, writes change something (a create, "
        "write, rename, unlink, fsync...).",
        "",
    ]
    out += syscall_table(res)
    out.append("")
    if st.main_calls:
        names = ", ".join(f"{k} {v}" for k, v in sorted(st.by_name.items(), key=lambda kv: -kv[1]))
        out += [f"Steady state, main→exec by call: {names}.", "", "```"] + st.main_calls + ["```", ""]
    return out


def run_hyperfine(fx: Fixture, commands: dict[str, list[str]], args) -> list[str]:
    """Cross-check with hyperfine (-N, no shell), as the bench user."""
    log("hyperfine cross-check")
    export = fx.out / "hyperfine.json"
    cmd = ["hyperfine", "-N", "--warmup", str(args.warmup), "--runs", str(args.hf_runs), "--export-json", str(export)]
    for name in ("direct", "env", "wrapper", "script"):
        cmd += ["-n", name, " ".join(commands[name])]
    run_as(fx, cmd)
    data = json.loads(export.read_text())
    med = {r["command"]: r["median"] * 1e6 for r in data["results"]}
    lines = [
        f"hyperfine -N cross-check ({args.hf_runs} runs each, commands run one after another): "
        + ", ".join(f"{k} {fmt_us(v)} µs" for k, v in med.items())
        + f"; wrapper/env {med['wrapper'] / med['env']:.3f}; "
        f"(script−direct)/(wrapper−direct) {(med['script'] - med['direct']) / (med['wrapper'] - med['direct']):.1f}.",
        "",
    ]
    return lines


def variants_report(args, fx: Fixture) -> None:
    builds: dict[str, tuple[Path, list[str], str]] = {}
    root = Path(args.variants_dir)
    tree = Path(args.tree).resolve() if args.tree else REPO
    for v in VARIANTS:
        if args.only and v.name not in args.only:
            continue
        log(f"building variant {v.name} of {tree}")
        t0 = time.monotonic()
        path, warnings = build(v, root / v.name, tree)
        log(f"  {time.monotonic() - t0:.0f} s")
        builds[v.name] = (fx.add_binary(v.name, path), warnings, v.note)
    compare_report(args, fx, builds, f"Release-profile variants of {tree}")


def compare_report(args, fx: Fixture, builds: dict[str, tuple[Path, list[str], str]], title: str) -> None:
    """Times and traces several wrapper binaries in one interleaved run."""
    first = next(iter(builds.values()))[0]
    run_as(fx, fx.wrapper(first))  # steady state for all: one record format
    commands = {"direct": [COMMAND], "env": [ENV_HOP, COMMAND]}
    for name, (path, _, _) in builds.items():
        commands[f"{name}:login"] = fx.wrapper(path)
        commands[f"{name}:version"] = [str(path), "--version"]
    log(f"timing {len(commands)} commands")
    result = run_timing(fx, commands, args)
    s = {k: summary(v)["median"] for k, v in result["times"].items()}
    c = {k: summary(v)["median"] for k, v in result["cpu"].items()}
    stacks = shutil.which("strace") is not None and strace_supports_k()
    out = [
        f"## {title}",
        "",
        f"{result['rounds']} interleaved rounds; medians in µs. `/bin/true` direct: wall "
        f"{fmt_us(s['direct'])}, CPU {fmt_us(c['direct'])}; `env` hop: wall {fmt_us(s['env'])}, "
        f"CPU {fmt_us(c['env'])}, {statistics.median(result['faults']['env']):.0f} page faults "
        f"(/bin/true alone: {statistics.median(result['faults']['direct']):.0f}).",
        "",
        "| binary | size bytes | `--version` − direct, wall / CPU µs | login wall µs | login / `env` wall "
        "| login / `env` CPU | page faults, login | calls before exec | main→exec | glibc static-link warnings |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, (path, warnings, note) in builds.items():
        calls = trace(fx, fx.wrapper(path), f"variant-{name}", stacks) if shutil.which("strace") else None
        n = count_calls(calls, str(path), str(fx.nfs), str(path)) if calls else None
        total = n.total if n else ""
        main = n.main if n and n.main is not None else ""
        warn = ", ".join(warnings) or "none"
        label = f"{name} ({note})" if note else name
        out.append(
            f"| {label} | {path.stat().st_size} | {fmt_us(s[name + ':version'] - s['direct'])} / "
            f"{fmt_us(c[name + ':version'] - c['direct'])} | {fmt_us(s[name + ':login'])} | "
            f"{s[name + ':login'] / s['env']:.3f} | {c[name + ':login'] / c['env']:.3f} | "
            f"{statistics.median(result['faults'][name + ':login']):.0f} | {total} | {main} | {warn} |"
        )
    out.append("")
    print("\n".join(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", help="measure this binary instead of building the repo's")
    p.add_argument(
        "--dist",
        action="store_true",
        help="build with scripts/build-dist (profile dist, static) and measure that binary",
    )
    p.add_argument(
        "--variant",
        choices=[v.name for v in VARIANTS],
        help="build the repo with this release-profile variant (see --variants) instead of as is",
    )
    p.add_argument("--uid", type=int, default=65534, help="bench user when run as root (default 65534)")
    p.add_argument("--gid", type=int, default=65534)
    p.add_argument("--runs", type=int, default=3000, help="most timed rounds (default 3000)")
    p.add_argument("--min-runs", type=int, default=500, help="fewest timed rounds (default 500)")
    p.add_argument("--seconds", type=float, default=60, help="time box for the timed rounds (default 60)")
    p.add_argument("--warmup", type=int, default=50, help="warm-up rounds (default 50)")
    p.add_argument("--syscalls-only", action="store_true", help="skip the timing")
    p.add_argument("--hyperfine", action="store_true", help="also cross-check with hyperfine -N")
    p.add_argument("--hf-runs", type=int, default=1000)
    p.add_argument("--variants", action="store_true", help="compare release profiles instead")
    p.add_argument("--only", nargs="*", help="with --variants: only these variants")
    p.add_argument("--tree", help="with --variants: build this source tree instead of the repo")
    p.add_argument(
        "--compare", nargs="+", metavar="NAME=BINARY", help="time and trace these wrapper binaries side by side"
    )
    p.add_argument("--variants-dir", default="/tmp/nfshc-variants", help="target directories for --variants")
    p.add_argument("--keep", action="store_true", help="keep the fixture (prints its path)")
    args = p.parse_args()

    if sys.platform != "linux":
        raise SystemExit("login.py: Linux only")
    if os.geteuid() != 0:
        args.uid, args.gid = os.getuid(), os.getgid()
    if args.uid == 0:
        raise SystemExit("login.py: refusing to run the logins as root (use --uid)")

    fx = Fixture(args.uid, args.gid)
    try:
        if args.variants:
            variants_report(args, fx)
            return
        if args.compare:
            builds = {}
            for item in args.compare:
                name, _, path = item.partition("=")
                binary = Path(path).resolve()
                builds[name] = (fx.add_binary(name, binary), link_warnings_of(binary.read_bytes()), "")
            compare_report(args, fx, builds, "Wrapper binaries compared")
            return
        args.built_as = "`cargo build --release`"
        if args.binary:
            binary = Path(args.binary).resolve()
            args.built_as = f"`{binary}`"
        elif args.dist:
            log("scripts/build-dist")
            proc = subprocess.run(
                [str(REPO / "scripts" / "build-dist")], cwd=REPO, capture_output=True, text=True
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit("login.py: scripts/build-dist failed")
            binary = Path(proc.stdout.strip().splitlines()[-1])
            args.built_as = "`scripts/build-dist` (profile dist: LTO, 1 codegen unit, +crt-static)"
        elif args.variant:
            variant = next(v for v in VARIANTS if v.name == args.variant)
            log(f"cargo build --release, variant {variant.name}")
            args.built_as = f"release-profile variant `{variant.name}`"
            binary, _ = build(variant, Path(args.variants_dir) / variant.name)
        else:
            log("cargo build --release")
            binary, _ = build(None, None)
        main_report(args, fx, binary, binary.stat().st_size)
    finally:
        if args.keep:
            log(f"fixture kept: {fx.base} {fx.shm}")
        else:
            fx.cleanup()


if __name__ == "__main__":
    main()
