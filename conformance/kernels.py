"""Run the suite under another Linux kernel: `python3 -m conformance kernel 6.1 -- PYTEST ARGS`.

The same pytest selection runs inside a guest kernel booted for the purpose;
the matrix, results JSON, HTML, pcaps and JUnit land on the host as if the run
were local, with the guest's kernel recorded (`kernel` is the guest's
`uname -r`; `guest` says which package, how it was booted and how long that
took). `python3 -m conformance compare host.json k61.json` then lists what
differs. See docs/kernels.md.

Kernels are Debian's packaged ones, named by version (`6.1`, `6.12`, a full
Debian package version `6.1.176-1`, an upstream version `6.12.115`, or the
package name), fetched once with `apt-get download` and extracted with dpkg-deb
into a cache by version (CACHE/<Debian version>/: boot/vmlinuz, lib/modules with
a modules.dep made by depmod); never installed into /boot or /lib/modules.

Ways to boot, each checked before anything starts (`kernel --list` shows them):

- kvm: QEMU with KVM, where /dev/kvm can boot a stock kernel (a nested KVM-PVM
  /dev/kvm cannot: it runs only PVM guest kernels);
- uml: Debian's user-mode-linux package, a 6.1 kernel run as a process (only
  its own kernel; no virtualisation needed, closer to native speed than tcg);
- tcg: QEMU's software emulation, for any kernel, slow but everywhere.

The guest has no network device. It sees the host's files read-only (9p or
virtiofs under QEMU, hostfs under UML) under a tmpfs overlay, so it can write
anywhere and nothing reaches the host; every process of the guest side also
runs in a private mount namespace where the host's whole tree is read-only but
the run's own folder. That folder (a private temporary folder) is the one
thing shared writable: the guest's init (ci/kernel-init.c, then
ci/kernel-init.sh) mounts it, runs pytest writing its results there, and
powers off. A guest that hangs or panics is ended at a deadline with its
console's last lines shown. Every process started here runs under
`setpriv --pdeathsig KILL` in a session of its own; a reaper removes the
temporary folder even when this process is killed.
"""

from __future__ import annotations

import argparse
import codecs
import ctypes
import fcntl
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import outputs

ROOT = Path(__file__).resolve().parents[1]
INIT_C = ROOT / "ci" / "kernel-init.c"
INIT_SH = ROOT / "ci" / "kernel-init.sh"
CACHE_ROOT = Path(os.environ.get("TCC_KERNEL_CACHE") or "/var/cache/tcp-conformance")
CACHE = CACHE_ROOT / "kernels"
UML = "/usr/bin/linux.uml"
UML_MODULES = "/usr/lib/uml/modules"
VIRTIOFSD = ("/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd")
RUN_PREFIX = "tcc-kernel-"
WAYS = ("kvm", "uml", "tcg")  # the order `--boot auto` tries them in
# What the cases need, loaded by the guest's init (each is built in or a module, by kernel); anything else
# the kernel loads on demand through modprobe, which finds the kernel's modules at /lib/modules.
GUEST_MODULES = ("ipv6", "af_packet", "veth", "sch_tbf", "inet_diag", "tcp_diag", "udp_diag")
# What the guest's init needs before it can reach the host's files, by share.
SHARE_MODULES = {
    "9p": ("virtio_pci", "9pnet_virtio", "9p", "overlay"),
    "virtiofs": ("virtio_pci", "virtiofs", "overlay"),
}
# Host sessions' variables that mean nothing in the guest (or would mislead it).
ENV_DROP = re.compile(
    r"^(SSH_.*|DISPLAY|WAYLAND_DISPLAY|XDG_RUNTIME_DIR|DBUS_SESSION_BUS_ADDRESS|PYTEST_CURRENT_TEST|"
    r"PYTEST_XDIST_.*|TMUX.*|STY|OLDPWD|PWD|SHLVL|_|COLUMNS|LINES|PY_COLORS)$"
)
# Exit codes of `kernel` itself (otherwise it exits with the guest's pytest's code).
EXIT_GUEST = 3  # the guest hung, panicked or ended without a result
EXIT_USAGE = 4  # nothing ran: an unknown version, no way to boot, a bad option (as pytest's usage error)


class KernelError(Exception):
    """Nothing can run: says what and what to do (exit EXIT_USAGE, before any case starts)."""


class GuestError(Exception):
    """The guest broke: says how, with its console's last lines (exit EXIT_GUEST)."""


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _mm(version: str) -> str | None:
    m = re.match(r"^(\d+)\.(\d+)", version)
    return f"{m[1]}.{m[2]}" if m else None


# ---------------------------------------------------------------- kernels: cached, in apt, user-mode-linux


@dataclass
class Kernel:
    """A kernel that can be booted: where its image and modules are."""

    version: str  # Debian package version (6.1.176-1), or the UML package's
    upstream: str  # 6.1.176
    release: str  # uname -r: 6.1.0-50-amd64
    package: str  # linux-image-6.1.0-50-amd64, or user-mode-linux
    image: str | None  # vmlinuz (None for UML: the kernel is the program)
    modules: str  # the folder holding <release>/modules.dep: bound at /lib/modules in the guest
    uml: bool = False

    def matches(self, spec: str) -> bool:
        return _matches(spec, self.package, self.version, self.upstream)


def _matches(spec: str, package: str, version: str, upstream: str) -> bool:
    return spec in (package, version, upstream, _mm(upstream)) and bool(spec)


def cached() -> list[Kernel]:
    """The kernels in the cache, newest first."""
    out = []
    for meta in glob.glob(str(CACHE / "*" / "kernel.json")):
        try:
            with open(meta) as f:
                d = json.load(f)
            folder = os.path.dirname(meta)
            out.append(
                Kernel(
                    d["version"],
                    d["upstream"],
                    d["release"],
                    d["package"],
                    os.path.join(folder, "boot", "vmlinuz"),
                    os.path.join(folder, "lib", "modules"),
                )
            )
        except (OSError, ValueError, KeyError):
            continue
    return sorted(out, key=lambda k: _numbers(k.upstream), reverse=True)


def uml_kernel() -> Kernel | None:
    """user-mode-linux's kernel, when the package is installed."""
    releases = sorted(glob.glob(os.path.join(UML_MODULES, "*", "modules.dep")))
    if not os.access(UML, os.X_OK) or not releases:
        return None
    release = os.path.basename(os.path.dirname(releases[-1]))
    try:
        version = _run(["dpkg-query", "-W", "-f=${Version}", "user-mode-linux"]).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        version = "?"
    upstream = re.match(r"^[\d.]+", release)[0] if re.match(r"^[\d.]+", release) else release
    return Kernel(version, upstream, release, "user-mode-linux", None, UML_MODULES, uml=True)


APT_IMAGE = re.compile(r"^linux-image-(\d+\.\d+[^-]*(?:-\d+)?)-amd64$")  # the generic flavour only


def apt_images() -> list[str]:
    """linux-image-*-amd64 packages this machine's apt index knows (no network: the local index)."""
    try:
        names = _run(["apt-cache", "pkgnames", "linux-image-"]).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted((n for n in names if APT_IMAGE.match(n)), key=_numbers, reverse=True)


def apt_version(package: str) -> str | None:
    try:
        text = _run(["apt-cache", "show", "--no-all-versions", package]).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^Version: (\S+)", text, re.M)
    return m[1] if m else None


def _upstream(debian_version: str) -> str:
    return re.match(r"^[\d.]+", debian_version)[0].rstrip(".")


def _release(package: str) -> str:
    return package[len("linux-image-") :]


def _available(images: list[str]) -> str:
    series = {}
    for p in images:
        series.setdefault(_mm(_release(p)), p)
    return ", ".join(f"{mm} ({p})" for mm, p in series.items()) or "none"


def find_in_apt(spec: str) -> tuple[str, str]:
    """(package, Debian version) for a version spec, from the apt index; KernelError naming what there is."""
    images = apt_images()
    mm = _mm(spec.removeprefix("linux-image-"))
    if not images:
        raise KernelError(
            f"kernel {spec}: apt knows no linux-image-*-amd64 package; run `apt-get update` "
            f"(or check /etc/apt/sources.list) and try again"
        )
    if mm is None:
        raise KernelError(
            f"kernel {spec!r}: not a kernel version; give 6.1, 6.12, a Debian version (6.1.176-1) "
            f"or a package name; apt has: {_available(images)}"
        )
    candidates = [p for p in images if _mm(_release(p)) == mm]
    if spec.startswith("linux-image-"):
        candidates = [p for p in candidates if p == spec]
    if not candidates:
        raise KernelError(
            f"kernel {spec}: no Debian package linux-image-{mm}*-amd64 in this machine's apt sources; "
            f"apt has: {_available(images)} (`apt-cache search linux-image`; `apt-get update` if the list is old)"
        )
    if spec == mm or spec.startswith("linux-image-"):
        package = candidates[0]
        version = apt_version(package)
        if version:
            return package, version
    seen = []
    for package in candidates:
        version = apt_version(package)
        if version and _matches(spec, package, version, _upstream(version)):
            return package, version
        seen.append(f"{version} ({package})")
    raise KernelError(f"kernel {spec}: no package of that version; apt has {mm} as: {', '.join(seen)}")


def fetch(package: str, version: str, log=print) -> Kernel:
    """Download a kernel package once, extract it into the cache (never installed), run depmod on it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    final = CACHE / version
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "kernel.json").exists():
            return next(k for k in cached() if k.version == version)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=CACHE))
        try:
            os.chmod(work, 0o755)  # apt's download sandbox user (_apt) writes here
            log(f"kernel: fetching {package} {version} (apt-get download, once; cached in {final})")
            proc = _run(["apt-get", "download", f"{package}={version}"], timeout=1800, cwd=work)
            debs = list(work.glob("*.deb"))
            if proc.returncode != 0 or not debs:
                raise KernelError(f"apt-get download {package}={version} failed: {(proc.stdout + proc.stderr)[-800:]}")
            tree = work / "tree"
            proc = _run(["dpkg-deb", "-x", str(debs[0]), str(tree)], timeout=600)
            if proc.returncode != 0:
                raise KernelError(f"dpkg-deb -x {debs[0].name} failed: {proc.stderr[-800:]}")
            release = _release(package)
            image = tree / "boot" / f"vmlinuz-{release}"
            mods = next(
                (
                    p
                    for p in (tree / "lib" / "modules" / release, tree / "usr" / "lib" / "modules" / release)
                    if p.is_dir()
                ),
                None,
            )
            if not image.exists() or mods is None:
                raise KernelError(f"{debs[0].name} holds no boot/vmlinuz-{release} or modules/{release}")
            out = work / "kernel"
            (out / "boot").mkdir(parents=True)
            (out / "lib" / "modules").mkdir(parents=True)
            os.rename(image, out / "boot" / "vmlinuz")
            config = tree / "boot" / f"config-{release}"
            if config.exists():
                os.rename(config, out / "boot" / "config")
            os.rename(mods, out / "lib" / "modules" / release)
            proc = _run(["depmod", "-b", str(out), release], timeout=300)  # the .deb ships no modules.dep
            if proc.returncode != 0:
                raise KernelError(f"depmod -b {out} {release} failed (install kmod): {proc.stderr[-800:]}")
            meta = {"package": package, "version": version, "upstream": _upstream(version), "release": release}
            (out / "kernel.json").write_text(json.dumps(meta, indent=1) + "\n")
            os.rename(out, final)
        except FileNotFoundError as e:
            raise KernelError(f"{e.filename} is missing: install apt, dpkg and kmod") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return next(k for k in cached() if k.version == version)


def resolve(spec: str, uml: bool = False, log=print) -> Kernel:
    """The kernel a version names: user-mode-linux's own (uml), else a cached one, else fetched from apt."""
    if uml:
        k = uml_kernel()
        if k is None:
            raise KernelError("--boot uml: user-mode-linux is not installed (apt-get install user-mode-linux)")
        if not k.matches(spec) and spec != "uml":
            raise KernelError(
                f"--boot uml runs only user-mode-linux's own kernel, {k.upstream}; {spec} needs --boot tcg (or kvm)"
            )
        return k
    for k in cached():
        if k.matches(spec):
            return k
    package, version = find_in_apt(spec)
    return fetch(package, version, log)


# ---------------------------------------------------------------- ways to boot


@dataclass
class Way:
    name: str
    ok: bool
    why: str  # what it is when ok; why not (and what to install) when not


def _qemu() -> str | None:
    return shutil.which("qemu-system-x86_64")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_kvm() -> Way:
    if not _qemu():
        return Way("kvm", False, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    if not os.path.exists("/dev/kvm"):
        return Way("kvm", False, "no /dev/kvm (no KVM module, or virtualisation is off or not nested here)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Way("kvm", False, "/dev/kvm is not readable and writable by this user")
    flags = _cpu_flags()
    if os.path.isdir("/sys/module/kvm_pvm"):
        return Way(
            "kvm",
            False,
            "/dev/kvm is KVM-PVM (module kvm_pvm: a nested hypervisor without VT-x/AMD-V, no vmx/svm flag "
            "here): it runs only PVM-enabled guest kernels, and a stock Debian kernel hangs before init",
        )
    if not flags & {"vmx", "svm"}:
        return Way("kvm", False, "/dev/kvm is there, but this CPU shows no vmx/svm flag (no hardware virtualisation)")
    return Way("kvm", True, f"qemu with KVM ({'vmx' if 'vmx' in flags else 'svm'})")


def detect_tcg() -> Way:
    qemu = _qemu()
    if not qemu:
        return Way("tcg", False, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    return Way("tcg", True, f"qemu software emulation ({qemu}); slow: give --timing-slack")


def detect_uml() -> Way:
    k = uml_kernel()
    if k is None:
        return Way("uml", False, "user-mode-linux is not installed (apt-get install user-mode-linux)")
    try:
        st = os.statvfs("/dev/shm")
        if st.f_flag & os.ST_NOEXEC or not os.access("/dev/shm", os.W_OK):
            return Way("uml", False, "user-mode-linux needs /dev/shm writable and without noexec (its memory)")
    except OSError:
        return Way("uml", False, "user-mode-linux needs a tmpfs at /dev/shm (its memory)")
    return Way("uml", True, f"user-mode-linux {k.version}: its own kernel {k.upstream} only, one CPU")


def ways() -> dict[str, Way]:
    return {"kvm": detect_kvm(), "uml": detect_uml(), "tcg": detect_tcg()}


def virtiofsd() -> str | None:
    return next((p for p in VIRTIOFSD if os.access(p, os.X_OK)), None) or shutil.which("virtiofsd")


def choose(spec: str, boot: str, share: str, log=print) -> tuple[Way, Kernel]:
    """The way to boot and the kernel, or KernelError naming why each way cannot (before anything starts)."""
    found = ways()
    if share == "virtiofs" and not virtiofsd():
        raise KernelError(
            "--share virtiofs: no virtiofsd (qemu-system-common's /usr/lib/qemu/virtiofsd, "
            "or the virtiofsd package); use --share 9p"
        )
    if boot != "auto":
        way = found[boot]
        if not way.ok:
            raise KernelError(f"--boot {boot} cannot run here: {way.why}")
        return way, resolve(spec, uml=boot == "uml", log=log)
    uml = uml_kernel()
    for name in WAYS:
        way = found[name]
        if not way.ok or (name == "uml" and not (uml and uml.matches(spec))):
            continue
        return way, resolve(spec, uml=name == "uml", log=log)
    reasons = "; ".join(f"{w.name}: {w.why}" for w in found.values() if not w.ok)
    raise KernelError(f"kernel {spec}: no way to boot it here ({reasons or 'user-mode-linux has another kernel'})")


# ---------------------------------------------------------------- the guest's init and initramfs


def init_binary() -> str:
    """ci/kernel-init.c built static (cached by its content): PID 1 of every guest."""
    source = INIT_C.read_bytes()
    key = hashlib.sha256(source).hexdigest()[:16]
    out = CACHE_ROOT / "init" / f"tcc-init-{key}"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        proc = _run(["gcc", "-static", "-Os", "-Wall", "-o", tmp, str(INIT_C)], timeout=120)
    except FileNotFoundError:
        raise KernelError("gcc is missing: it builds the guest's init (apt-get install gcc libc6-dev)") from None
    if proc.returncode != 0:
        raise KernelError(
            f"gcc -static {INIT_C.name} failed (a static libc: apt-get install libc6-dev):\n{proc.stderr[-1500:]}"
        )
    os.replace(tmp, out)
    return str(out)


def _module_table(modules: str, release: str) -> tuple[dict, set]:
    """{name: (path, [dependency paths])} from modules.dep, and the built-in names."""
    base = Path(modules) / release

    def name(path: str) -> str:
        return re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path)).replace("-", "_")

    table = {}
    for line in (base / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        table[name(path)] = (str(base / path), [str(base / d) for d in deps.split()])
    builtin = set()
    if (base / "modules.builtin").exists():
        builtin = {name(p) for p in (base / "modules.builtin").read_text().split()}
    return table, builtin


def module_order(modules: str, release: str, wanted) -> list[str]:
    """The module files to load for `wanted`, dependencies first (built-in ones left out)."""
    table, builtin = _module_table(modules, release)
    by_path = {path: n for n, (path, _) in table.items()}
    order: list[str] = []

    def visit(n: str):
        if n in builtin or table[n][0] in order:
            return
        for dep in table[n][1]:
            visit(by_path[dep])
        order.append(table[n][0])

    for n in wanted:
        if n not in table and n not in builtin:
            raise KernelError(f"kernel {release} has no module {n} (not in modules.dep or modules.builtin)")
        visit(n)
    return order


def _decompressed(path: str) -> bytes:
    if path.endswith(".xz"):
        return lzma.decompress(Path(path).read_bytes())
    if path.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes())
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
    return Path(path).read_bytes()


def cpio(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as an initramfs): (name, mode, data, (rdev major, minor))."""
    out = bytearray()
    for ino, (name, mode, data, (major, minor)) in enumerate([*entries, ("TRAILER!!!", 0, b"", (0, 0))], 1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data + b"\0" * (-len(data) % 4)
    return bytes(out)


def initramfs(path: str, kernel: Kernel, share: str) -> list[str]:
    """Write the initramfs of a QEMU guest: /init and the modules it loads; returns their paths in it."""
    files = module_order(kernel.modules, kernel.release, [*SHARE_MODULES[share], *GUEST_MODULES])
    entries = [
        ("dev", 0o40755, b"", (0, 0)),
        ("dev/console", 0o20600, b"", (5, 1)),
        ("proc", 0o40555, b"", (0, 0)),
        ("modules", 0o40755, b"", (0, 0)),
        ("init", 0o100755, Path(init_binary()).read_bytes(), (0, 0)),
    ]
    inside = []
    for i, f in enumerate(files):
        name = f"modules/{i:02d}-{re.sub(r'[.]ko([.][a-z]+)?$', '', os.path.basename(f))}.ko"
        entries.append((name, 0o100644, _decompressed(f), (0, 0)))
        inside.append("/" + name)
    with open(path, "wb") as f:
        f.write(cpio(entries))
    return inside


# ---------------------------------------------------------------- the guest side's processes


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_CLONE_NEWNS, _MS_REC, _MS_PRIVATE, _MS_BIND = 0x20000, 0x4000, 0x40000, 0x1000
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY, _SYS_MOUNT_SETATTR = -100, 0x8000, 1, 442


def _read_only_host(writable: list[str]):
    """A preexec_fn: a private mount namespace where the host's whole tree is read-only but `writable`."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.argtypes = [
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]

    def setattr_(path: str, flags: int, attr: _MountAttr):
        if (
            libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr))
            != 0
        ):
            raise OSError(ctypes.get_errno(), f"mount_setattr {path}")

    def pre():
        if libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "make / private")
        setattr_("/", _AT_RECURSIVE, _MountAttr(attr_set=_MOUNT_ATTR_RDONLY))
        for path in writable:
            if libc.mount(path.encode(), path.encode(), None, _MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind {path}")
            setattr_(path, 0, _MountAttr(attr_clr=_MOUNT_ATTR_RDONLY))

    return pre


REAPER = """
import os, shutil, signal, sys, time
folder, parent = sys.argv[1], int(sys.argv[2])
def bye(*_):
    try:  # the process groups of the guest's processes (UML's helpers outlive its main process)
        groups = [int(g) for g in open(os.path.join(folder, "groups")).read().split()]
    except (OSError, ValueError):
        groups = []
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    for _ in range(50):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.lexists(folder):
            break
        time.sleep(0.1)
    os._exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, bye)
if os.getppid() != parent:
    bye()
while True:
    signal.pause()
"""


def _spawn(run: Run, cmd: list[str], writable: list[str] | None, **kw) -> subprocess.Popen:
    """A child that dies with this process (setpriv --pdeathsig KILL), in a session of its own (Ctrl-C
    reaches only this process, which ends it), optionally seeing the host read-only but `writable`.
    Its process group is noted in the run's folder, for the reaper."""
    proc = subprocess.Popen(
        ["setpriv", "--pdeathsig", "KILL", "--", *cmd],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_read_only_host(writable) if writable is not None else None,
        **kw,
    )
    run.procs.append(proc)
    with open(os.path.join(run.folder, "groups"), "a") as f:
        f.write(f"{proc.pid}\n")
    return proc


def _end(proc: subprocess.Popen) -> None:
    """End a child this run started, and its process group (a session of its own: only its helpers)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a helper left in the group (UML's)
    except (ProcessLookupError, PermissionError):
        pass


def sweep_runs() -> list[str]:
    """Remove the folders of earlier runs that were killed before they could (their lock is free)."""
    removed = []
    for lock in glob.glob(os.path.join(tempfile.gettempdir(), RUN_PREFIX + "*", "lock")):
        folder = os.path.dirname(lock)
        try:
            st = os.lstat(folder)
            if st.st_uid != os.geteuid() or os.path.islink(folder) or time.time() - st.st_mtime < 60:
                continue  # not ours, or a run that may be taking its lock right now
            with open(lock) as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


# ---------------------------------------------------------------- pytest's output options


OUTPUT_OPTIONS = {
    "--results-json": "results.json",
    "--html": None,
    "--junitxml": "junit.xml",
    "--junit-xml": "junit.xml",
    "--pcap-dir": None,
}
REFUSED = {"--update-expectations": "the checkout is read-only in the guest: run --update-expectations on the host"}


def split_outputs(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """pytest's arguments without its output options, and those options' values."""
    rest, found = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if name in REFUSED:
            raise KernelError(f"{name}: {REFUSED[name]}")
        if name in OUTPUT_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    raise KernelError(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            found["--junitxml" if name == "--junit-xml" else name] = value
        else:
            rest.append(a)
        i += 1
    return rest, found


# ---------------------------------------------------------------- a run


@dataclass
class Run:
    way: Way
    kernel: Kernel
    share: str
    memory: int
    cpus: int
    boot_timeout: float
    deadline: float
    out: object = sys.stdout
    folder: str = ""
    procs: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    renames: dict = field(default_factory=dict)  # the guest's path of an output: where it goes on the host


def _job(run: Run, pytest_args: list[str], pcap_dir: str) -> str:
    cols = shutil.get_terminal_size((100, 24)).columns
    env = {k: v for k, v in os.environ.items() if not ENV_DROP.match(k) and re.match(r"^[A-Za-z_]\w*$", k)}
    env.update(COLUMNS=str(cols), PY_COLORS="1" if run.out.isatty() else "0", PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "pytest", *pytest_args]
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [
        f"TCC_MODULES={shlex.quote(run.kernel.modules)}",
        f"TCC_PCAP_DIR={shlex.quote(pcap_dir)}",
        f"TCC_CWD={shlex.quote(os.getcwd())}",
        f"TCC_TTY={1 if run.out.isatty() else 0}",
        f"TCC_ARGV=({' '.join(shlex.quote(a) for a in argv)})",
    ]
    return "\n".join(lines) + "\n"


def _command(run: Run, mods: list[str]) -> tuple[list[str], list[str]]:
    """The guest's command line, and what it may write on the host."""
    f = run.folder
    params = ["quiet", "panic=-1", "mitigations=off", f"tcc_script={INIT_SH}", f"tcc_job={f}"]
    if mods:
        params.append("tcc_mods=" + ":".join(mods))
    if run.kernel.uml:
        return [
            UML,
            f"mem={run.memory}M",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
            f"init={init_binary()}",
            f"uml_dir={f}/uml",
            "con0=null,fd:1",
            "con=null",
            "ssl=null",
            "tcc_root=hostfs",
            *params,
        ], [f, "/dev/shm"]
    accel = ["-accel", "kvm", "-cpu", "host"] if run.way.name == "kvm" else ["-accel", "tcg", "-cpu", "max"]
    cmd = [
        _qemu(),
        *accel,
        "-machine",
        "q35",
        "-m",
        f"{run.memory}M",
        "-smp",
        str(run.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-chardev",
        "stdio,id=con,signal=off",
        "-serial",
        "chardev:con",
        "-kernel",
        run.kernel.image,
        "-initrd",
        f"{f}/initrd",
        "-append",
        " ".join(["console=ttyS0", f"tcc_root={run.share}", *params]),
    ]
    if run.share == "9p":
        cmd += [
            "-fsdev",
            "local,id=root,path=/,security_model=passthrough,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=root,mount_tag=root",
            "-fsdev",
            f"local,id=results,path={f},security_model=passthrough,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=results,mount_tag=results",
        ]
    else:
        cmd += ["-object", f"memory-backend-memfd,id=mem,size={run.memory}M,share=on", "-numa", "node,memdev=mem"]
        for tag in ("root", "results"):
            cmd += [
                "-chardev",
                f"socket,id={tag},path={f}/{tag}.sock",
                "-device",
                f"vhost-user-fs-pci,chardev={tag},tag={tag}",
            ]
    return cmd, [f]


def _start_virtiofsd(run: Run) -> None:
    daemon = virtiofsd()
    for tag, source in (("root", "/"), ("results", run.folder)):
        sock = f"{run.folder}/{tag}.sock"
        proc = _spawn(
            run,
            [
                daemon,
                f"--socket-path={sock}",
                "-o",
                f"source={source}",
                "-o",
                "sandbox=chroot",
                "-o",
                "cache=auto" if tag == "root" else "cache=none",
                "--rlimit-nofile=4096",
            ],
            [run.folder, "/run", "/var/run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        end = time.monotonic() + 10
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > end:
                raise KernelError(f"virtiofsd ({tag}) did not start: {proc.stderr.read().decode()[-800:]}")
            time.sleep(0.02)


def _watch(run: Run, proc: subprocess.Popen) -> deque:
    """Follow the console: note when init starts and pytest is ready, pass pytest's output through, and
    end the guest at the boot timeout or the deadline. Returns the console's last lines."""
    tail: deque = deque(maxlen=40)
    fd = proc.stdout.fileno()
    start = run.times["spawn"]
    pending, ready, shown = "", False, 0  # shown: characters of the unfinished line already printed
    needles = [*run.renames.values(), "\r"]  # never print part of a path _home replaces, or half a CR LF
    decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may be split between reads
    while True:
        now = time.monotonic()
        limit = (start + run.boot_timeout) if not ready else run.times["ready"] + run.deadline
        if now > limit:
            what = (
                f"did not reach pytest within {run.boot_timeout:g} s of starting (--boot-timeout)"
                if not ready
                else f"did not finish within {run.deadline:g} s (--deadline)"
            )
            _end(proc)
            raise GuestError(f"the guest {what}", tail)
        r, _, _ = select.select([fd], [], [], min(1.0, max(0.0, limit - now)))
        if not r:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        *lines, pending = (pending + decoder.decode(data)).replace("\r\n", "\n").split("\n")
        for line in lines:
            tail.append(_home(run, line).rpartition("\r")[2])
            if "tcc-init: started" in line and "init" not in run.times:
                run.times["init"] = time.monotonic()
            if line.startswith("tcc-kernel: ready"):
                ready = True
                run.times["ready"] = time.monotonic()
                print(
                    f"kernel: {run.kernel.release} booted by {run.way.name} in "
                    f"{run.times['ready'] - start:.1f} s (init after {run.times.get('init', now) - start:.1f} s); "
                    f"pytest runs inside",
                    file=run.out,
                    flush=True,
                )
            elif ready:
                print(_home(run, line[shown:]), file=run.out, flush=True)
            shown = 0
        if ready and pending:  # pytest's progress dots, as they come
            upto = len(pending) - _held(pending, needles)
            if upto > shown:
                print(_home(run, pending[shown:upto]), end="", file=run.out, flush=True)
                shown = upto
    if pending:
        tail.append(pending)
    return tail


def _held(text: str, needles: list[str]) -> int:
    """How many characters at the end of text could be the start of one of needles (to print later)."""
    for k in range(min(len(text), max(map(len, needles))), 0, -1):
        if any(n.startswith(text[-k:]) for n in needles):
            return k
    return 0


def _home(run: Run, line: str) -> str:
    """pytest's lines naming a file in the run's folder name where that file goes on the host."""
    for name, path in run.renames.items():
        line = line.replace(path, name)
    return line


def _finish(run: Run, wanted: dict, pcap_dir: str, default_pcaps: bool) -> int:
    """Bring the results home: pcaps into their folder, JSON/HTML/JUnit where pytest was told."""
    from . import html

    f = run.folder
    try:
        rc, start, end = open(f"{f}/rc").read().split()
        run.times["pytest"] = float(end) - float(start)
    except (OSError, ValueError):
        return -1
    for entry in os.listdir(f"{f}/pcaps"):
        shutil.move(f"{f}/pcaps/{entry}", os.path.join(pcap_dir, entry))
    if default_pcaps and not os.listdir(pcap_dir):
        os.rmdir(pcap_dir)
    doc = None
    if os.path.exists(f"{f}/out/results.json"):
        with open(f"{f}/out/results.json") as fh:
            doc = json.load(fh)
        doc["guest"] = {
            "boot": run.way.name,
            "share": "hostfs" if run.kernel.uml else run.share,
            "package": run.kernel.package,
            "package_version": run.kernel.version,
            "release": run.kernel.release,
            "host_kernel": os.uname().release,
            "boot_to_init_s": round(run.times.get("init", 0) - run.times["spawn"], 2),
            "boot_to_pytest_s": round(run.times["ready"] - run.times["spawn"], 2),
            "pytest_s": round(run.times["pytest"], 2),
        }
        if wanted.get("--results-json"):
            outputs.write_json(wanted["--results-json"], doc)
        if wanted.get("--html"):
            html.write(wanted["--html"], doc)
    if wanted.get("--junitxml") and os.path.exists(f"{f}/out/junit.xml"):
        with open(f"{f}/out/junit.xml", "rb") as src, outputs.open_new(wanted["--junitxml"]) as dst:
            shutil.copyfileobj(src, dst)
    return int(rc)


def _prebuild(args: list[str]) -> None:
    """Build the selected built-in agents on the host (cached by content), so the guest finds them ready
    instead of building them under emulation. A failure is left for the guest's run to report."""
    from . import targets

    selected = None
    for i, a in enumerate(args):
        if a == "--targets" and i + 1 < len(args):
            selected = set(args[i + 1].split(","))
        elif a.startswith("--targets="):
            selected = set(a.partition("=")[2].split(","))
    try:
        targets.build_launcher()  # every agent of the guest's run starts through it
    except Exception:
        pass
    for target in targets.builtin_targets().values():
        if target.build is not None and (target.name in selected if selected is not None else target.default):
            try:
                target.build()
            except Exception:  # the guest's run says why, in its matrix
                pass


def run_guest(run: Run, pytest_args: list[str]) -> int:
    """Boot the guest, run pytest in it, bring the results home; pytest's exit code."""
    args, wanted = split_outputs(pytest_args)
    for name in ("--results-json", "--html", "--junitxml"):
        if name in wanted:
            wanted[name] = outputs.check_file(wanted[name], name)
    default_pcaps = "--pcap-dir" not in wanted
    if not default_pcaps:
        wanted["--pcap-dir"] = outputs.check_dir(wanted["--pcap-dir"], "--pcap-dir")
    log = lambda m: print(m, file=run.out, flush=True)  # noqa: E731
    for bad in (INIT_SH, os.getcwd(), sys.executable):
        if re.search(r"\s", str(bad)):
            raise KernelError(f"{bad}: a path with white space cannot go on the guest's command line")
    _prebuild(args)
    sweep_runs()
    run.folder = tempfile.mkdtemp(prefix=RUN_PREFIX)
    lock = reaper = None
    pcap_dir = ""
    try:
        lock = open(os.path.join(run.folder, "lock"), "w")  # held for the run: a free lock marks a dead run's
        fcntl.flock(lock, fcntl.LOCK_EX)
        # removes the folder (and ends the guest's process groups) if this process dies without a finally
        reaper = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "--", sys.executable, "-I", "-S", "-c", REAPER, run.folder,
             str(os.getpid())],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        if default_pcaps:
            pcap_dir = outputs.private_dir()
        else:
            pcap_dir = wanted["--pcap-dir"]
            outputs.make_dir(pcap_dir)
        for sub in ("out", "pcaps", "uml"):
            os.mkdir(os.path.join(run.folder, sub), 0o700)
        # -p: the plugin's options even for files outside the checkout (its conftest.py loads it under this name)
        guest_args = ["-p", "pytest_tcp_conformance.plugin", *args]
        guest_args += ["--results-json", f"{run.folder}/out/results.json", "--pcap-dir", pcap_dir]
        if "--junitxml" in wanted:
            guest_args += ["--junitxml", f"{run.folder}/out/junit.xml"]
            run.renames[wanted["--junitxml"]] = f"{run.folder}/out/junit.xml"
        run.renames[wanted.get("--results-json", "(not kept: no --results-json given)")] = (
            f"{run.folder}/out/results.json"
        )
        with open(os.path.join(run.folder, "job.sh"), "w") as fh:
            fh.write(_job(run, guest_args, pcap_dir))
        mods = []
        if run.kernel.uml:
            mods = module_order(run.kernel.modules, run.kernel.release, ["overlay", *GUEST_MODULES])
        else:
            mods = initramfs(f"{run.folder}/initrd", run.kernel, run.share)
            if run.share == "virtiofs":
                _start_virtiofsd(run)
        cmd, writable = _command(run, mods)
        run.times["spawn"] = time.monotonic()
        proc = _spawn(
            run,
            cmd,
            writable,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TMPDIR="/dev/shm" if run.kernel.uml else run.folder),
        )
        tail = _watch(run, proc)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        rc = _finish(run, wanted, pcap_dir, default_pcaps)
        if rc < 0:
            raise GuestError("the guest ended without a result (a panic, or its init failed)", tail)
        t = run.times
        log(
            f"kernel: {run.kernel.release} ({run.kernel.package} {run.kernel.version}) by {run.way.name}: "
            f"init after {t.get('init', t['spawn']) - t['spawn']:.1f} s, pytest ready after "
            f"{t['ready'] - t['spawn']:.1f} s, pytest took {t['pytest']:.1f} s; "
            f"{time.monotonic() - t['spawn']:.1f} s in all"
        )
        return rc
    finally:
        for proc in reversed(run.procs):
            _end(proc)
        if default_pcaps and pcap_dir and os.path.isdir(pcap_dir) and not os.listdir(pcap_dir):
            os.rmdir(pcap_dir)
        shutil.rmtree(run.folder, ignore_errors=True)
        if lock is not None:
            lock.close()
        if reaper is not None:
            if reaper.poll() is None:
                reaper.terminate()
            try:
                reaper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()


# ---------------------------------------------------------------- the command


def listing(out=print) -> None:
    found = ways()
    out("ways to boot here:")
    for w in found.values():
        out(f"  {w.name:4} {'yes' if w.ok else 'no '}  {w.why}")
    out(f"kernels in the cache ({CACHE}):")
    kernels = cached()
    for k in kernels:
        out(f"  {k.upstream:10} {k.version:22} {k.release:24} {k.package}")
    if not kernels:
        out("  (none yet: `kernel VERSION` fetches one)")
    uml = uml_kernel()
    if uml:
        out(f"user-mode-linux's kernel: {uml.upstream} (package {uml.version}; --boot uml)")
    images = apt_images()
    out(f"in apt (fetched on first use): {_available(images)}")
    out(f"shares: 9p (built into qemu), virtiofs ({virtiofsd() or 'no virtiofsd: not available'})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m conformance kernel",
        description="Run a pytest selection of the suite under another Linux kernel (a Debian package, "
        "fetched once, never installed) and bring its matrix, JSON, HTML, pcaps and JUnit home. "
        "Everything after -- goes to pytest.",
        epilog="example: python3 -m conformance kernel 6.1 -- tests/cases -k refused --results-json k61.json",
    )
    p.add_argument(
        "version",
        nargs="?",
        help="6.1, 6.12, a Debian version (6.1.176-1), an upstream version "
        "(6.12.115) or a package name (linux-image-6.1.0-50-amd64)",
    )
    p.add_argument("--list", action="store_true", help="the cached kernels and which ways to boot work here")
    p.add_argument(
        "--summary",
        nargs="+",
        metavar="JSON",
        help="for --results-json files of runs (host or guest): how each was booted and how long it took, "
        "then every case's measurement on one target side by side (timings, which compare leaves out)",
    )
    p.add_argument("--target", help="the target --summary shows (default: the first every run has)")
    p.add_argument(
        "--boot",
        choices=("auto", *WAYS),
        default="auto",
        help="how to boot: kvm, uml (user-mode-linux's own kernel only) or tcg (QEMU's emulation); "
        "auto (default): the first of those that works here for that version",
    )
    p.add_argument(
        "--share", choices=("9p", "virtiofs"), default="9p", help="how a QEMU guest sees the host's files (default 9p)"
    )
    p.add_argument("--memory", type=int, default=2048, metavar="MB", help="the guest's memory (default 2048)")
    p.add_argument(
        "--cpus",
        type=int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="a QEMU guest's CPUs (default: the host's, at most 4; UML has one)",
    )
    p.add_argument(
        "--boot-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long the guest may take to reach pytest (default 60, 180 under tcg)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="how long pytest may run in the guest before it is ended (default 3600)",
    )
    return p


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")  # the same clean end as Ctrl-C


def summary(paths: list[str], target: str | None = None, out=print) -> None:
    """How each run was booted and how long it took, then each case's measurement (its `detail`) on one
    target across the runs: what `compare` leaves out (it compares verdicts and keys, not timings)."""
    from .results import load_json

    docs = [(os.path.basename(p).removesuffix(".json"), load_json(p)) for p in paths]
    width = max(12, *(len(name) for name, _ in docs))
    out(f"{'run':<{width}} {'kernel':<24} {'boot':<10} {'init s':>7} {'ready s':>8} {'pytest s':>9}  verdicts")
    for name, doc in docs:
        g = doc.get("guest") or {}
        counts = {}
        for r in doc["results"]:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        way = f"{g['boot']}/{g['share']}" if g else "host"
        init, ready, took = (f"{g[k]:.1f}" if g else "-" for k in ("boot_to_init_s", "boot_to_pytest_s", "pytest_s"))
        out(f"{name:<{width}} {doc['kernel']:<24} {way:<10} {init:>7} {ready:>8} {took:>9}  {verdicts}")
    targets = [t for t in docs[0][1]["targets"] if all(t in d["targets"] for _, d in docs)]
    target = target or (targets[0] if targets else None)
    cases = list(dict.fromkeys(r["case"] for _, d in docs for r in d["results"] if r["target"] == target))
    index = [{r["case"]: r for r in d["results"] if r["target"] == target} for _, d in docs]
    rows = [
        [
            case,
            *("(missing)" if i.get(case) is None else f"{i[case]['key']} {i[case]['detail']}".strip() for i in index),
        ]
        for case in cases
    ]
    head = [f"case ({target})", *(name for name, _ in docs)]
    widths = [max(len(row[c]) for row in [head, *rows]) for c in range(len(head))]
    out("")
    for row in [head, *rows]:
        out("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str], out=None) -> int:
    out = out or sys.stdout
    if "--" in argv:
        i = argv.index("--")
        own, pytest_args = argv[:i], argv[i + 1 :]
    else:
        own, pytest_args = argv, []
    args = parser().parse_args(own)
    say = lambda m: print(m, file=out, flush=True)  # noqa: E731
    if args.list:
        listing(say)
        return 0
    if args.summary:
        try:
            summary(args.summary, args.target, say)
        except (OSError, ValueError, KeyError) as e:
            say(f"python3 -m conformance kernel --summary: {e}")
            return 2
        return 0
    if not args.version:
        parser().error("give a kernel version (or --list)")
    if os.geteuid() != 0:
        say("python3 -m conformance kernel: run as root (the guest's files and namespaces need it)")
        return EXIT_USAGE
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        way, kernel = choose(args.version, args.boot, args.share, say)
        timeout = args.boot_timeout or (180 if way.name == "tcg" else 60)
        run = Run(way, kernel, args.share, args.memory, max(1, args.cpus), timeout, args.deadline, out=out)
        return run_guest(run, pytest_args)
    except (KernelError, outputs.OutputError) as e:
        say(f"python3 -m conformance kernel: {e}")
        return EXIT_USAGE
    except GuestError as e:
        message, tail = e.args
        say(f"\npython3 -m conformance kernel: {message}; the console's last lines:")
        for line in tail:
            say(f"  | {line}")
        return EXIT_GUEST
    except KeyboardInterrupt:
        say("\npython3 -m conformance kernel: interrupted; the guest is ended and its folder removed")
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
