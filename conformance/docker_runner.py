"""The Docker runner: a target's agent in a container with no network of its own,
wired into the case's topology, so every case runs unchanged.

- Images are built locally, never pulled, each from its target's image recipe
  (conformance.targets.ImageRecipe): files on an empty base (static binaries in
  FROM scratch) or on a Debian base with python3 the suite builds with debootstrap
  (from the machine's own apt source) and `docker import`. Every image is tagged
  by the content it was built from, so it is built once.
- The container starts with `--network none`; its network namespace is bound
  under /run/netns (pyroute2's netns.attach) and the topology puts the veth end,
  the addresses and the sysctls there, as it does for a namespace of its own.
- The agent's stdin/stdout are the container's (`docker run -i`); the Docker SDK
  builds the images, finds the container's PID and removes containers.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .targets import DEBIAN_BASES, BuildError, ImageRecipe, Target, builtin_targets, cache_dir, find_tool

OWNER_LABEL = "tcc.owner"  # the owning run's lease id (conformance/lease.py)
SPACE_LABEL = "tcc.lockspace"  # the lockspace in which that lease can be judged
SUITE_LABEL = "tcc.suite"
DEBIAN_SUITE = "bookworm"


class DockerUnavailable(Exception):
    """No engine, or it cannot run this target: the case is skipped with this reason."""


def apt_mirror() -> str | None:
    """The machine's own Debian mirror (from its apt sources), for debootstrap; None: debootstrap's default."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s", text, re.M
        )
        if m:
            return m.group(1)
    return None


class DockerRunner:
    def __init__(self, runtime: str = "runc", owner: tuple[str, str] | None = None):
        """owner: (lockspace, lease id) of the run whose containers these are (conformance/lease.py)."""
        self.runtime = runtime
        self.owner = owner
        self._client = None
        self._images: dict[str, str] = {}

    # -- engine ------------------------------------------------------------
    def client(self):
        if self._client is None:
            try:
                import docker

                client = docker.from_env(timeout=60)
                client.ping()
                runtimes = client.info().get("Runtimes", {})
            except Exception as e:  # the SDK raises several kinds for "no engine"
                raise DockerUnavailable(
                    f"no Docker engine reachable ({type(e).__name__}); start one: bash ci/docker-engine.sh"
                ) from None
            if self.runtime not in runtimes:
                raise DockerUnavailable(
                    f"OCI runtime {self.runtime!r} is not configured in the Docker engine "
                    f"(it has: {', '.join(runtimes)})"
                )
            self._client = client
        return self._client

    # -- images ------------------------------------------------------------
    def image(self, target: Target | str) -> str:
        """The image id of target's agent (a Target, or a built-in's name), built from its image recipe
        if missing (once: pytest-xdist workers wait on a lock)."""
        target = self._target(target)
        if target.name not in self._images:
            with open(cache_dir() / "docker-images.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._images[target.name] = self._image(target.name, target.image)
        return self._images[target.name]

    @staticmethod
    def _target(target: Target | str) -> Target:
        builtins = builtin_targets()
        found = target if isinstance(target, Target) else builtins.get(target) or Target(target)
        if found.image is None:
            having = ", ".join(t.name for t in builtins.values() if t.image is not None)
            raise DockerUnavailable(
                f"target {found.name} has no image recipe: only targets with one ({having}) run under --runner docker"
            )
        return found

    def _image(self, name: str, recipe: ImageRecipe) -> str:
        if recipe.base != "scratch" and recipe.base not in DEBIAN_BASES:
            known = ", ".join(["scratch", *DEBIAN_BASES])
            raise BuildError(f"target {name}: unknown image base {recipe.base!r} (known: {known})")
        base = "scratch" if recipe.base == "scratch" else self._debian(recipe.base)
        files = {fname: (src.read_bytes(), mode) for fname, (src, mode) in recipe.files().items()}
        h = hashlib.sha256(base.encode() + b"\0" + json.dumps(recipe.entrypoint).encode() + b"\0")
        for fname, (data, mode) in sorted(files.items()):
            h.update(f"{fname}\0{mode:o}\0".encode() + data + b"\0")
        tag = f"tcc-agent-{name}:{h.hexdigest()[:16]}"
        dockerfile = "".join(
            [
                f"FROM {base}\n",
                *(f"COPY {fname} /{fname}\n" for fname in files),
                f"ENTRYPOINT {json.dumps(list(recipe.entrypoint))}\n",
            ]
        )
        return self._find(tag) or self._build(tag, dockerfile, files)

    def _find(self, tag: str) -> str | None:
        import docker

        try:
            return self.client().images.get(tag).id
        except docker.errors.ImageNotFound:
            return None

    def _build(self, tag: str, dockerfile: str, files: dict[str, tuple[bytes, int]]) -> str:
        """Build from an in-memory context (classic builder: no frontend image is pulled)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for fname, (data, mode) in {"Dockerfile": (dockerfile.encode(), 0o644), **files}.items():
                info = tarfile.TarInfo(fname)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        image, _ = self.client().images.build(
            fileobj=buf, custom_context=True, tag=tag, rm=True, pull=False, labels={SUITE_LABEL: "agent"}
        )
        return image.id

    def _debian(self, base: str) -> str:
        """A Debian root filesystem with the base's runtime (debootstrap, then docker import), cached by recipe."""
        mirror = apt_mirror()
        package = DEBIAN_BASES[base]
        recipe = f"debootstrap --variant=minbase --include={package} {DEBIAN_SUITE} {mirror or ''}"
        tag = f"tcc-{base}:{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
        if self._find(tag):
            return tag
        debootstrap = find_tool("debootstrap", "debootstrap")
        work = tempfile.mkdtemp(prefix="tcc-rootfs-", dir="/var/tmp")
        try:
            rootfs = os.path.join(work, "rootfs")
            argv = [debootstrap, "--variant=minbase", f"--include={package}", DEBIAN_SUITE, rootfs] + (
                [mirror] if mirror else []
            )
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise BuildError(
                    f"debootstrap for the {base} image failed: {' '.join(argv)}\n"
                    f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                )
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            try:
                self.client().api.import_image_from_data(
                    tar.stdout.read(), repository=tag.split(":")[0], tag=tag.split(":")[1]
                )
            finally:
                tar.wait()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not self._find(tag):
            raise BuildError(f"docker import of the Debian root filesystem did not produce {tag}")
        return tag

    # -- containers --------------------------------------------------------
    def argv(self, target: Target | str, container: str) -> list[str]:
        """The command that runs target's agent (a Target, or a built-in's name) in a new container `container`."""
        image = self.image(target)
        docker = shutil.which("docker")
        if docker is None:
            raise DockerUnavailable("the docker command line is not installed (Debian: apt-get install docker.io)")
        # The CLI dies with the harness (PR_SET_PDEATHSIG); its end closes the container's stdin,
        # the agent exits at EOF and --rm removes the container.
        return [
            "setpriv",
            "--pdeathsig",
            "KILL",
            docker,
            "run",
            "-i",
            "--rm",
            "--name",
            container,
            "--network",
            "none",
            "--runtime",
            self.runtime,
            *self._owner_labels(),
            "--label",
            f"{SUITE_LABEL}=agent",
            "--log-driver",
            "none",
            image,
        ]

    def _owner_labels(self) -> list[str]:
        if self.owner is None:
            raise DockerUnavailable("no lease for this run's containers (conformance/lease.py)")
        space, lease = self.owner
        return ["--label", f"{OWNER_LABEL}={lease}", "--label", f"{SPACE_LABEL}={space}"]

    def pid(self, container: str) -> int:
        """The host PID of the container's first process (whose network namespace the case wires)."""
        attrs = self.client().containers.get(container).attrs
        pid = attrs["State"]["Pid"]
        if not pid:
            raise DockerUnavailable(
                f"container {container} is not running: {attrs['State'].get('Error') or attrs['State']}"
            )
        return pid

    def remove(self, container: str) -> None:
        import docker

        try:
            self.client().containers.get(container).remove(force=True)
        except (docker.errors.NotFound, docker.errors.APIError, DockerUnavailable):
            pass


DEFAULT_SOCKET = "/var/run/docker.sock"


def _engine_listens(path: str) -> bool:
    """Whether an engine answers on the unix socket at path. A socket file an engine left when it
    stopped refuses connections: nothing runs there, and the SDK need not be imported (0.3 s of CPU
    in every run) to learn it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return True  # something is there (a permission, a timeout): let the SDK say what
    return True


def sweep_containers() -> tuple[list[str], list[str]]:
    """Remove the suite's containers whose owning run is gone (its lease is free: conformance/lease.py).

    Returns (names removed, notes): a container whose owner cannot be judged from here (another
    lockspace: another host or /run) is left alone and noted; a listing that fails is noted too."""
    from .lease import owner_alive

    if not os.environ.get("DOCKER_HOST") and not _engine_listens(DEFAULT_SOCKET):
        return [], []  # no engine here: nothing of ours can be running in one
    try:
        import docker

        client = docker.from_env(timeout=10)
        containers = client.containers.list(all=True, filters={"label": OWNER_LABEL})
    except Exception as e:  # the SDK raises several kinds for "no engine"
        return [], [f"could not list Docker containers to sweep ({type(e).__name__}: {e})"]
    removed, notes = [], []
    for c in containers:
        alive = owner_alive(c.labels.get(SPACE_LABEL, ""), c.labels.get(OWNER_LABEL, ""))
        if alive is None:
            notes.append(f"left container {c.name}: its owner cannot be judged from here")
        elif not alive:
            try:
                c.remove(force=True)
                removed.append(c.name)
            except Exception as e:
                notes.append(f"could not remove container {c.name} of a dead run: {e}")
    return removed, notes
