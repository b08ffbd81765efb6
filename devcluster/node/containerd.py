"""A private containerd for the real node, and the images it serves.

Its root (content store, snapshots, metadata) lives in the project cache and outlives the node,
so an image imported once is there on the next start; its state, sockets and mounts live under
/run/audiojob-operator and are removed with the node. It never touches the machine's own
containerd (/run/containerd, /var/lib/containerd).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "k8s.io"
PAUSE_REPO = "audiojob.local/pause"


class CtrError(subprocess.SubprocessError):
    """A `ctr` command failed; the message carries its stderr."""


@dataclass
class Containerd:
    root: Path
    state: Path
    cni_bin: Path
    cni_conf: Path
    sandbox_image: str

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def registry_hosts(self) -> Path:
        """containerd's per-registry hosts directory (`certs.d/<host>/hosts.toml`), read on
        every pull, so a test can point the node at a registry it has just started."""
        return self.state / "certs.d"

    def allow_plain_http(self, host: str) -> None:
        """Pull from the registry at `host` (host:port) over plain HTTP, as a local registry
        serves; containerd would otherwise insist on HTTPS for a non-localhost name."""
        conf = self.registry_hosts / host / "hosts.toml"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def config(self) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{self.root}"
state = "{self.state / "state"}"

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.state / "containerd.sock.ttrpc"}"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "opt"}"

[{cri}]
  sandbox_image = "{self.sandbox_image}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "runc create failed: ... can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.registry]
    config_path = "{self.registry_hosts}"
  [{cri}.cni]
    bin_dir = "{self.cni_bin}"
    conf_dir = "{self.cni_conf}"
"""

    def argv(self, config: Path) -> list[str]:
        # Info logs every CRI call with its time (bench/bench_realpods.py reads them to split a
        # pod's start); warn keeps the test logs short.
        level = os.environ.get("AUDIOJOB_CONTAINERD_LOG_LEVEL", "warn")
        return ["containerd", f"--config={config}", f"--log-level={level}"]

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if done.returncode != 0:
            # ctr's own sentence, which a bare CalledProcessError would leave out of the report.
            said = done.stderr.strip()[-2000:]
            raise CtrError(f"ctr {' '.join(args)} failed (exit {done.returncode}): {said}")
        return done

    def images(self) -> set[str]:
        return set(self.ctr("images", "ls", "-q").stdout.split())

    def import_archive(self, archive: Path) -> None:
        """Import a docker-archive or OCI tarball (named by its RepoTags / ref annotation).
        An import is idempotent, and one failed once in CI with a freshly built archive and
        passed on the next start: a failure is reported and tried once more."""
        try:
            self.ctr("images", "import", str(archive), timeout=900)
        except CtrError as e:
            print(f"{e}; importing once more", file=sys.stderr, flush=True)
            self.ctr("images", "import", str(archive), timeout=900)

    def prune_replaced_images(self) -> None:
        """Drop images that a re-import replaced: the CRI plugin keeps each image also under
        its ID (`sha256:…`), which keeps an old build's layers after its name moved on."""
        lines = self.ctr("images", "ls").stdout.splitlines()[1:]
        refs = [(w[0], w[2]) for w in (line.split() for line in lines) if len(w) > 2]
        named = {digest for ref, digest in refs if not ref.startswith("sha256:")}
        stale = [ref for ref, digest in refs if ref.startswith("sha256:") and digest not in named]
        if stale:
            self.ctr("images", "rm", "--sync", *stale, timeout=300)

    def remove_workloads(self) -> list[str]:
        """Kill and delete every task and container (pods the kubelet did not get to stop),
        so the next start's CRI plugin recovers nothing. Images stay."""
        errors = []
        try:
            for task in self.ctr("tasks", "ls", "-q").stdout.split():
                subprocess.run(
                    ["ctr", f"--address={self.socket}", "-n", NAMESPACE, "tasks", "rm", "-f", task],
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
            containers = self.ctr("containers", "ls", "-q").stdout.split()
            if containers:
                self.ctr("containers", "rm", *containers, timeout=120)
        except (subprocess.SubprocessError, OSError) as e:
            errors.append(f"could not remove containerd's containers: {e}")
        return errors


def pause_archive(pause_binary: Path, out_dir: Path) -> tuple[Path, str]:
    """A docker-archive holding only the static pause program, named by its content; returns
    the archive and its image reference. Rebuilt only when the program changes."""
    program = pause_binary.read_bytes()
    tag = hashlib.sha256(program).hexdigest()[:12]
    ref = f"{PAUSE_REPO}:{tag}"
    archive = out_dir / f"pause-{tag}.tar"
    if archive.exists():
        return archive, ref
    layer = _tar({"pause": (program, 0o755)})
    layer_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        },
        sort_keys=True,
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_id}/layer.tar"]}]
    ).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".tmp")
    tmp.write_bytes(
        _tar(
            {
                f"{layer_id}/layer.tar": (layer, 0o644),
                config_name: (config, 0o644),
                "manifest.json": (manifest, 0o644),
            }
        )
    )
    tmp.rename(archive)
    return archive, ref


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def content_key(archive: Path) -> str:
    """The archive's content key: the `.key` file `make image` writes beside it, else its size
    and modification time (archives are replaced, never rewritten in place)."""
    for key in (archive.with_suffix(".key"), archive.with_name(archive.name + ".key")):
        if key.exists():
            return key.read_text().strip()
    st = archive.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def archive_refs(archive: Path) -> set[str]:
    """The image names a docker-archive declares (empty when it declares none)."""
    with tarfile.open(archive) as tar, contextlib.suppress(KeyError):
        manifest = tar.extractfile("manifest.json")
        if manifest is not None:
            return {
                normalise(t) for entry in json.load(manifest) for t in entry.get("RepoTags") or []
            }
    return set()


def normalise(ref: str) -> str:
    """Docker's short names as containerd stores them (`app:dev` → docker.io/library/app:dev)."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref
