"""The host state a kubelet and its pods change, recorded before the node starts and put back
after it stops.

A kubelet assumes it owns the machine: it sets kernel sysctls, adds iptables chains, and
creates directories outside its root dir. Here it shares the machine with other people's test
clusters, so everything it may touch is recorded in a JSON file first (which survives a crash of
the process that started the node: the next start restores it) and restored on teardown. Only
what is ours is removed: chains and rules whose names are the kubelet's or the node's, `cni-`
network namespaces and directory entries that appeared while the node ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The kubelet's kernel tunables (pkg/kubelet/cm setupKernelTunables) and what the pod network
# turns on.
SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "net/ipv4/ip_forward",
    # Writing ip_forward also sets this to its opposite (inet_forward_change): restored after.
    "net/ipv4/conf/all/accept_redirects",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
# Directories the kubelet, containerd's CRI plugin or the CNI plugins create outside the
# node's own directories.
WATCHED_DIRS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/run/netns",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/run/containerd",
    "/var/lib/containerd",
    "/etc/kubernetes",
)
# iptables chains that are ours to remove when they were not there before the node started.
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "AUDIOJOB-NODE-")
IPTABLES = ("iptables", "ip6tables")


@dataclass
class HostState:
    """What was there before the node started."""

    sysctls: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, list[str] | None] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def capture(cls) -> HostState:
        state = cls()
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                state.sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
        for d in WATCHED_DIRS:
            state.dirs[d] = sorted(os.listdir(d)) if os.path.isdir(d) else None
        for cmd in IPTABLES:
            chains, rules = iptables_ours(cmd)
            state.chains[cmd], state.rules[cmd] = chains, rules
        return state

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))

    def diff(self, later: HostState) -> list[str]:
        """How `later` differs from this state in what the node may change (new entries in
        /run/netns count only when they are the CNI plugin's)."""
        found = [
            f"sysctl {k.replace('/', '.')} is {later.sysctls.get(k)}, was {v}"
            for k, v in self.sysctls.items()
            if later.sysctls.get(k) != v
        ]
        for cmd in IPTABLES:
            found += [
                f"{cmd} chain {c} appeared"
                for c in later.chains.get(cmd, [])
                if c not in self.chains.get(cmd, [])
            ]
            found += [
                f"{cmd} rule {r} appeared"
                for r in later.rules.get(cmd, [])
                if r not in self.rules.get(cmd, [])
            ]
        for d, before in self.dirs.items():
            new = set(later.dirs.get(d) or []) - set(before or [])
            if Path(d).name == "netns":
                new = {e for e in new if e.startswith("cni-")}
            elif before is None and later.dirs.get(d) is not None:
                new.add("(the directory itself)")
            found += [f"{d}/{e} appeared" for e in sorted(new)]
        return found

    def restore(self) -> list[str]:
        """Put everything back; returns what could not be (one sentence each)."""
        errors: list[str] = []
        for key, value in self.sysctls.items():
            path = Path("/proc/sys") / key
            try:
                if path.read_text().strip() != value:
                    path.write_text(value)
            except OSError as e:
                errors.append(f"could not restore sysctl {key.replace('/', '.')}={value}: {e}")
        for cmd in IPTABLES:
            errors += _restore_iptables(cmd, self.chains.get(cmd, []), self.rules.get(cmd, []))
        for d, before in self.dirs.items():
            errors += _restore_dir(Path(d), before)
        return errors


def iptables_ours(cmd: str) -> tuple[list[str], list[str]]:
    """Our chains as "table chain" and the rules that are in or jump to one of them, as
    "table -A CHAIN ..." lines of iptables-save."""
    try:
        out = subprocess.run(
            [f"{cmd}-save"], check=True, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [], []
    chains: list[str] = []
    rules: list[str] = []
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith(OUR_CHAIN_PREFIXES):
                chains.append(f"{table} {name}")
        elif line.startswith("-A "):
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words else ""
            if words[1].startswith(OUR_CHAIN_PREFIXES) or target.startswith(OUR_CHAIN_PREFIXES):
                rules.append(f"{table} {line}")
    return chains, rules


def _restore_iptables(cmd: str, chains_before: list[str], rules_before: list[str]) -> list[str]:
    errors: list[str] = []
    chains, rules = iptables_ours(cmd)
    # Jumps first, then the chains they jump to can be flushed and deleted.
    for rule in rules:
        if rule in rules_before:
            continue
        table, spec = rule.split(" ", 1)
        argv = [cmd, "-w", "-t", table, "-D", *shlex.split(spec)[1:]]
        if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
            errors.append(f"could not delete the {cmd} rule `{spec}` in table {table}")
    for chain in chains:
        if chain in chains_before:
            continue
        table, name = chain.split()
        subprocess.run([cmd, "-w", "-t", table, "-F", name], capture_output=True, check=False)
        if (
            subprocess.run(
                [cmd, "-w", "-t", table, "-X", name], capture_output=True, check=False
            ).returncode
            != 0
        ):
            errors.append(f"could not delete the {cmd} chain {name} in table {table}")
    return errors


def _restore_dir(path: Path, before: list[str] | None) -> list[str]:
    if not path.is_dir():
        return []
    errors: list[str] = []
    keep = set(before or [])
    netns = path.name == "netns"
    for entry in sorted(os.listdir(path)):
        # Other people's network namespaces may appear in /run/netns meanwhile; only the CNI
        # plugin's (named cni-<uuid>) are the node's.
        if entry in keep or (netns and not entry.startswith("cni-")):
            continue
        errors += remove_tree(path / entry)
    if before is None and (not netns or not os.listdir(path)):
        errors += remove_tree(path)
    return errors


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below `prefix`, deepest first."""
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = Path(line.split()[4].replace("\\040", " "))
        if mountpoint == prefix or prefix in mountpoint.parents:
            found.append(mountpoint)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(prefix: Path) -> list[str]:
    errors = []
    for m in mounts_under(prefix):
        # Lazy: a mount still busy (a process being killed) is detached now and freed later.
        r = subprocess.run(["umount", "-l", str(m)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            errors.append(f"could not unmount {m}: {r.stderr.strip()}")
    return errors


def remove_tree(path: Path) -> list[str]:
    errors = unmount_all(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as e:
        errors.append(f"could not remove {path}: {e}")
    return errors
