"""The targets: built-in agents and agents added with --add-target.

The built-in targets are the records of builtin_targets() and nothing else names
them: each record owns how to get its agent's argv (a command, or a build) and
how to make its container image for the Docker runner (an ImageRecipe). BUILTIN,
the CLI's default and the CI matrix all derive from those records.

C and Go agents are built on demand into a cache keyed by the content of their
sources and the compiler's version, so a rebuild happens only when something
changed; concurrent pytest-xdist workers wait on a file lock for one build.

A record with default=False is built in but runs only when --targets names it
(netstack: its cold build takes minutes); BUILTIN is the default selection,
OPT_IN the others. A record with link="packet" is a userspace TCP/IP stack: its
agent gets the target's veth as a packet socket and reports its own socket
tables (conformance/case.py, Net.start).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS_DIR = ROOT / "targets"
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


class BuildError(Exception):
    """A target could not be built: says which tool and how to get it."""


SYSTEM_CACHE = "/var/cache/tcp-conformance"  # root's default: agents built there run as an unprivileged uid


def cache_dir() -> Path:
    """Where built agents are kept: $TCC_CACHE, else (as root) /var/cache/tcp-conformance, readable by the
    unprivileged uid agents run as (conformance/privilege.py), else $XDG_CACHE_HOME or ~/.cache."""
    base = os.environ.get("TCC_CACHE")
    if not base and os.geteuid() == 0:
        base = SYSTEM_CACHE
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tcp-conformance")
    path = Path(base)
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


# Where a toolchain lives when it was installed outside the package manager (and may be off PATH).
TOOL_HOMES = {"go": "/usr/local/go/bin", "cargo": "~/.cargo/bin", "rustc": "~/.cargo/bin"}


def find_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    home = os.path.expanduser(TOOL_HOMES.get(tool, ""))
    if path is None and home and os.access(os.path.join(home, tool), os.X_OK):
        path = os.path.join(home, tool)
    if path is None:
        raise BuildError(
            f"`{tool}` not found on PATH: install it (Debian: `apt-get install {package}`, or run `bash ci/setup.sh`)"
        )
    return path


def tool_version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""


def content_key(files: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for e in extra:
        h.update(e.encode() + b"\0")
    return h.hexdigest()[:16]


def cached_build(name: str, key: str, build) -> Path:
    """Return the cached binary for key, building it (once, under a lock) if missing."""
    out = cache_dir() / f"{name}-agent-{key}"
    if out.exists():
        return out
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        try:
            build(tmp)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
    return out


def _run_build(what: str, argv: list[str], cwd: Path, env=None, timeout: float = 600):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise BuildError(f"building the {what} failed: {' '.join(argv)}\n{proc.stdout}{proc.stderr}")


C_FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]


def _build_gcc(name: str, what: str, src: Path, static: bool) -> Path:
    """One C file built with gcc (static: no dynamic loader at each start), keyed by it and gcc's version."""
    gcc = find_tool("gcc", "gcc")
    flags = C_FLAGS + (["-static"] if static else [])
    key = content_key([src], tool_version([gcc, "--version"]), *flags)
    return cached_build(
        name + ("-static" if static else ""),
        key,
        lambda out: _run_build(what, [gcc, *flags, "-o", str(out), str(src)], src.parent),
    )


def build_c(static: bool = False) -> Path:
    return _build_gcc("c", "C agent", TARGETS_DIR / "c" / "agent.c", static)


@functools.cache  # once per process (and before the flight's children fork): the key asks gcc its version
def build_launcher() -> Path:
    """The harness's agent launcher (conformance/launch.c, see conformance/privilege.py), static."""
    return _build_gcc("launch", "agents' launcher", Path(__file__).with_name("launch.c"), static=True)


def _build_go_module(name: str, what: str, timeout: float = 600) -> Path:
    """A static Go agent (CGO_ENABLED=0) built from targets/<name>, keyed by its sources and Go's version."""
    go = find_tool("go", "golang-go")
    src_dir = TARGETS_DIR / name
    files = [p for p in src_dir.iterdir() if p.suffix == ".go" or p.name in ("go.mod", "go.sum")]
    key = content_key(files, tool_version([go, "version"]))
    env = dict(os.environ, CGO_ENABLED="0")
    env.setdefault("GOFLAGS", "-mod=mod")
    argv = [go, "build", "-trimpath", "-o"]
    return cached_build(
        name, key, lambda out: _run_build(f"{what} agent", [*argv, str(out), "."], src_dir, env, timeout)
    )


def build_go() -> Path:
    return _build_go_module("go", "Go")


def build_netstack() -> Path:
    """The netstack agent (targets/netstack: gVisor's TCP/IP stack as a Go library), keyed like Go's. Its
    module (gvisor.dev/gvisor, large) is fetched by ci/setup.sh (`go mod download`); a cold build of the
    stack takes about 3 minutes on 2 loaded cores, hence its own timeout."""
    return _build_go_module("netstack", "netstack", timeout=1800)


RUST_TRIPLE = "x86_64-unknown-linux-gnu"


def build_rust() -> Path:
    """The Rust agent: cargo, offline (the crates were fetched by ci/setup.sh), a static binary (crt-static
    against glibc's libc.a: musl's target is not installed here) that also serves the FROM scratch image."""
    cargo = find_tool("cargo", "cargo (Rust 1.78 or newer, e.g. from rustup)")
    rustc = find_tool("rustc", "rustc (Rust 1.78 or newer, e.g. from rustup)")
    src = TARGETS_DIR / "rust"
    files = [src / "Cargo.toml", src / "Cargo.lock", src / "build.rs", *sorted((src / "src").rglob("*.rs"))]
    key = content_key(files, tool_version([rustc, "--version"]), "crt-static", RUST_TRIPLE)

    def build(out: Path):
        target_dir = cache_dir() / "rust-target"
        env = dict(
            os.environ,
            CARGO_TARGET_DIR=str(target_dir),
            RUSTC=rustc,
            RUSTFLAGS="-C target-feature=+crt-static",
            PATH=os.path.dirname(cargo) + os.pathsep + os.environ.get("PATH", ""),
        )
        _run_build(
            "Rust agent", [cargo, "build", "--release", "--offline", "--locked", "--target", RUST_TRIPLE], src, env
        )
        shutil.copy(target_dir / RUST_TRIPLE / "release" / "tcc-agent", out)
        os.chmod(out, 0o755)

    return cached_build("rust", key, build)


# The JVM's own warnings go to stderr (by default they go to stdout, into the replies), no perf data
# file lands in the host's /tmp, and the JVM starts fast: -Xint, no JIT compiler threads (an agent
# runs a few hundred calls at most; measured 131 ms of CPU to start, against 166 with C1 only).
JAVA_FLAGS = (
    "-Xint",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Xshare:auto",
    "-Xlog:disable",
    "-Xlog:all=warning:stderr",
)


def build_java() -> Path:
    """The Java agent as a jar: javac (lint as errors) and jar, keyed by the source and javac's version."""
    javac = find_tool("javac", "default-jdk-headless")
    jar = find_tool("jar", "default-jdk-headless")
    src = TARGETS_DIR / "java" / "Agent.java"
    flags = ["-Xlint:all", "-Werror", "-XDstringConcat=inline"]
    key = content_key([src], tool_version([javac, "-version"]), *flags)

    def build(out: Path):
        with tempfile.TemporaryDirectory(prefix="tcc-javac-") as classes:
            _run_build("Java agent", [javac, *flags, "-d", classes, str(src)], src.parent)
            _run_build(
                "Java agent",
                [jar, "--create", "--main-class", "Agent", "--file", str(out), "-C", classes, "."],
                src.parent,
            )
        os.chmod(out, 0o644)

    return cached_build("java", key, build)


# What the class-archive run asks the agent: it loads the classes of a start, of sockets of both
# families and kinds, and of their options (no address is bound: nothing reaches any network).
JAVA_TRAINING = "socket tcp inet\nsocket tcp inet6\nsocket udp inet\nsocket udp inet6\nquit\n"


def java_class_archive(java: str, jar: Path) -> Path:
    """A class data sharing archive of the agent's classes (-XX:ArchiveClassesAtExit, JDK 13 and
    newer), made once by a run of the agent: a JVM then maps them instead of loading and verifying
    them at each start (measured 110 ms of CPU to start instead of 131). Keyed by the jar and the
    installed JVM (its files' identity, which an upgrade changes; asking `java -version` would cost a
    JVM start). A JVM that cannot use the archive ignores it (-Xshare:auto)."""
    home = Path(os.path.realpath(java)).parent.parent
    jvm = [p for p in (home / "bin" / "java", *sorted(home.glob("lib/server/libjvm.so"))) if p.exists()]
    identity = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in jvm]
    key = content_key([jar], *identity)

    def build(out: Path):
        argv = [java, *JAVA_FLAGS, f"-XX:ArchiveClassesAtExit={out}", "-cp", str(jar), "Agent"]
        proc = subprocess.run(argv, input=JAVA_TRAINING, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not out.exists():
            raise BuildError(
                f"making the Java agent's class archive failed: {' '.join(argv)}\n{proc.stdout}{proc.stderr}"
            )
        os.chmod(out, 0o644)

    return cached_build("java-classes", key, build)


def java_launch(jar: Path) -> list[str]:
    java = find_tool("java", "default-jre-headless")
    archive = java_class_archive(java, jar)
    return [java, *JAVA_FLAGS, f"-XX:SharedArchiveFile={archive}", "-cp", str(jar), "Agent"]


NODE_AGENT = TARGETS_DIR / "node" / "agent.js"


def node_launch(script: Path) -> list[str]:
    return [find_tool("node", "nodejs"), str(script)]


# Image bases made locally from Debian (debootstrap, docker import; conformance/docker_runner.py): the
# runtime package each carries. "scratch" is the other base: an empty image for a static binary.
DEBIAN_BASES = {"debian-python": "python3", "debian-java": "openjdk-17-jre-headless", "debian-node": "nodejs"}


@dataclass(frozen=True)
class ImageRecipe:
    """How to make a target's container image (conformance.docker_runner builds it, never pulls).

    base: "scratch" (an empty image: the agent is a static binary) or "debian-python" (a Debian
    root filesystem with python3, which the Docker runner makes with debootstrap).
    files: called when the image is needed (it may build): {name: (file on the host, mode)},
    each copied to /name in the image.
    entrypoint: the agent's argv inside the image.
    """

    base: str
    files: Callable[[], dict[str, tuple[Path, int]]]
    entrypoint: tuple[str, ...]


def static_binary_image(build: Callable[[], Path]) -> ImageRecipe:
    """A static binary as /agent in FROM scratch."""
    return ImageRecipe("scratch", lambda: {"agent": (build(), 0o755)}, ("/agent",))


@dataclass
class Target:
    """A target: a name, how to get the argv of its agent, and how to make its container image.

    command: the agent's argv, for a target that needs no build (and for --add-target).
    build: a callable returning the agent's binary (built on demand, cached), instead of a command.
    image: its ImageRecipe for --runner docker; None: it cannot run under the Docker runner.
    """

    name: str
    command: list[str] = field(default_factory=list)
    build: Callable[[], Path] | None = None
    image: ImageRecipe | None = None
    builtin: bool = False
    variant: str = ""  # what distinguishes this target from another of the same runtime (recorded)
    origin: str = "built-in"  # built-in, --add-target, or the target file that defines it
    prepare: str = ""  # a target file's build step: a shell command run once per run, before any case
    folder: Path | None = None  # where prepare runs (the target file's folder)
    launch: Callable[[Path], list[str]] | None = None  # the argv that runs a built file (a jar needs a JVM)
    # "kernel": the agent's sockets are the kernel's. "packet": the agent is a userspace TCP/IP stack on
    # the target's veth (a packet socket the harness opens; the namespace's kernel is deafened on it) that
    # answers the protocol's introspection commands (targets/PROTOCOL.md) for its socket tables.
    link: str = "kernel"
    default: bool = True  # in the default selection (a built-in with False runs when --targets names it)
    # The built agent's argv, once per process: finding the build in the cache asks the compiler for
    # its version (the content key), and `javac -version` alone costs a JVM start, 0.3 s of CPU.
    _built: list[str] | None = field(default=None, repr=False, compare=False)

    def argv(self) -> list[str]:
        if self.build is not None:
            if self._built is None:
                built = self.build()
                self._built = self.launch(built) if self.launch else [str(built)]
            return list(self._built)
        if self.folder is not None:  # a target file's command: relative files are from its folder
            return [
                str(self.folder / a) if not os.path.isabs(a) and (self.folder / a).exists() else a for a in self.command
            ]
        return list(self.command)


# -I -S: an isolated interpreter without site: starts fast, stdlib only.
PYTHON_FLAGS = ("-I", "-S")


def builtin_targets() -> dict[str, Target]:
    """The built-in targets, in their default order: the one place that names them."""
    python_agent = TARGETS_DIR / "python" / "agent.py"
    records = [
        Target(
            "python",
            [sys.executable, *PYTHON_FLAGS, str(python_agent)],
            image=ImageRecipe(
                "debian-python", lambda: {"agent.py": (python_agent, 0o644)}, ("python3", *PYTHON_FLAGS, "/agent.py")
            ),
        ),
        Target("c", build=build_c, image=static_binary_image(lambda: build_c(static=True))),
        Target("go", build=build_go, image=static_binary_image(build_go)),  # CGO_ENABLED=0: static
        Target("rust", build=build_rust, image=static_binary_image(build_rust)),
        Target(
            "java",
            build=build_java,
            launch=java_launch,
            image=ImageRecipe(
                "debian-java",
                lambda: {"agent.jar": (build_java(), 0o644)},
                ("java", *JAVA_FLAGS, "-cp", "/agent.jar", "Agent"),
            ),
        ),
        # Node's defaults kept (allowHalfOpen: false, backlog 511); nothing to build: the script runs as it is.
        Target(
            "node",
            build=lambda: NODE_AGENT,
            launch=node_launch,
            variant="Node defaults (allowHalfOpen: false, backlog 511)",
            image=ImageRecipe("debian-node", lambda: {"agent.js": (NODE_AGENT, 0o644)}, ("node", "/agent.js")),
        ),
        # gVisor's netstack: not in the default selection (cold build ~3 min, a 100 MB module); no
        # container image (the Docker runner cannot hand it the packet socket yet).
        Target("netstack", build=build_netstack, link="packet", default=False),
    ]
    for target in records:
        target.builtin = True
    return {t.name: t for t in records}


BUILTIN = tuple(name for name, t in builtin_targets().items() if t.default)  # the default selection
OPT_IN = tuple(name for name, t in builtin_targets().items() if not t.default)  # built in, run when named
LINKS = ("kernel", "packet")


def parse_add_target(spec: str) -> Target:
    """NAME=COMMAND, for an agent outside the repo that speaks targets/PROTOCOL.md."""
    name, sep, command = spec.partition("=")
    name = name.strip()
    if not sep or not command.strip():
        raise ValueError(f"--add-target {spec!r}: expected NAME=COMMAND")
    if not NAME_RE.match(name):
        raise ValueError(f"--add-target {spec!r}: NAME must match {NAME_RE.pattern}")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"--add-target {spec!r}: {e}") from None
    if not argv:
        raise ValueError(f"--add-target {spec!r}: empty COMMAND")
    return Target(name, argv, origin="--add-target")


TARGET_KEYS = {"name", "command", "variant", "build", "image", "link"}


def load_target_file(path: str) -> list[Target]:
    """Targets defined in a TOML file, each a [[target]] table:

    [[target]]
    name = "py313"
    command = "/usr/bin/python3.13 -I -S agent.py"   # or a list; relative files: from this file's folder
    variant = "CPython 3.13"                          # optional, recorded with the results
    build = "make agent"                              # optional: run once per run, in this file's folder
    link = "packet"                                   # optional: a userspace stack (see Target.link)
    [target.image]                                    # optional: for --runner docker
    base = "scratch"                                  # or "debian-python"
    files = { agent = "build/agent" }                 # /NAME in the image <- a file (from this folder)
    entrypoint = ["/agent"]
    """
    import tomllib

    file = Path(path).resolve()
    try:
        doc = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"--target-file {path}: {e}") from None
    if set(doc) - {"target"} or not isinstance(doc.get("target"), list):
        raise ValueError(f"--target-file {path}: expected [[target]] tables only")
    out = []
    for i, entry in enumerate(doc["target"]):
        where = f"--target-file {path}: [[target]] #{i + 1}"
        if not isinstance(entry, dict) or set(entry) - TARGET_KEYS:
            raise ValueError(f"{where}: keys must be among {sorted(TARGET_KEYS)}")
        name, command = entry.get("name"), entry.get("command")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"{where}: `name` must match {NAME_RE.pattern}")
        argv = shlex.split(command) if isinstance(command, str) else command
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"{where}: `command` must be a string or a list of strings")
        image = entry.get("image")
        recipe = None
        if image is not None:
            files = image.get("files", {}) if isinstance(image, dict) else None
            if (
                not isinstance(files, dict)
                or image.get("base") not in ("scratch", *DEBIAN_BASES)
                or not isinstance(image.get("entrypoint"), list)
            ):
                bases = ", ".join(["scratch", *DEBIAN_BASES])
                raise ValueError(f"{where}: `image` needs base (one of {bases}), files and entrypoint")
            paths = {k: (file.parent / v, 0o755) for k, v in files.items()}
            recipe = ImageRecipe(image["base"], lambda paths=paths: paths, tuple(image["entrypoint"]))
        link = entry.get("link", "kernel")
        if link not in LINKS:
            raise ValueError(f"{where}: `link` must be one of {', '.join(LINKS)}")
        out.append(
            Target(
                name,
                argv,
                image=recipe,
                variant=str(entry.get("variant", "")),
                origin=str(file),
                prepare=str(entry.get("build", "")),
                folder=file.parent,
                link=link,
            )
        )
    return out


def prepare(target: Target) -> None:
    """Run a target file's build step (once per run, before any case); BuildError with its output."""
    if not target.prepare:
        return
    proc = subprocess.run(target.prepare, shell=True, cwd=target.folder, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise BuildError(
            f"target {target.name}: its build step `{target.prepare}` failed (exit {proc.returncode}):"
            f"\n{(proc.stdout + proc.stderr)[-2000:]}"
        )


def select_targets(selection: str | None, added: list[str], files: list[str] = ()) -> dict[str, Target]:
    """The targets of a run, in order: --targets picks among built-ins, target files' and added ones."""
    available = builtin_targets()
    for target in [t for path in files for t in load_target_file(path)]:
        if target.name in available:
            raise ValueError(f"--target-file {target.origin}: {target.name!r} is defined twice")
        available[target.name] = target
    for spec in added:
        target = parse_add_target(spec)
        if target.name in available and available[target.name].builtin:
            raise ValueError(f"--add-target {spec!r}: {target.name!r} is a built-in target name")
        if target.name in available:
            raise ValueError(f"--add-target {spec!r}: {target.name!r} given twice")
        available[target.name] = target
    if selection is None:  # every target but the built-ins that run only when named
        return {n: t for n, t in available.items() if n not in OPT_IN}
    names = [n.strip() for n in selection.split(",") if n.strip()]
    if not names:
        raise ValueError("--targets: no target named")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"--targets: unknown target(s) {', '.join(unknown)}; known: {', '.join(available)}")
    return {n: available[n] for n in dict.fromkeys(names)}


RUNNERS = ("namespace", "docker")


def parse_runners(specs: list[str], targets: list[str]) -> dict[str, str]:
    """--runner RUNNER (every target) or --runner NAME=RUNNER (one target); default: namespace."""
    out = {t: "namespace" for t in targets}
    for spec in specs:
        name, sep, runner = spec.rpartition("=")
        runner = runner.strip()
        if runner not in RUNNERS:
            raise ValueError(f"--runner {spec!r}: runner must be one of {', '.join(RUNNERS)}")
        if not sep:
            out = {t: runner for t in targets}
        elif name.strip() in out:
            out[name.strip()] = runner
        else:
            raise ValueError(f"--runner {spec!r}: {name.strip()!r} is not a selected target ({', '.join(targets)})")
    return out
