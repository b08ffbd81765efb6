"""The real node's kubelet: its credentials, its configuration and its command line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from devcluster.pki import sign_cert, write_kubeconfig

# Pods that do not tolerate this never land on the real node, so tests written for kwok's
# scripted pods keep getting kwok nodes.
TAINT_KEY = "audiojob.dev/real-node"


@dataclass(frozen=True)
class Kubelet:
    node_name: str
    work_dir: Path
    node_ip: str
    port: int
    healthz_port: int
    cgroup_root: str
    runtime_endpoint: str

    @property
    def root_dir(self) -> Path:
        return self.work_dir / "kubelet"

    @property
    def pki(self) -> Path:
        return self.work_dir / "kubelet-pki"

    def write_files(self, *, cluster_pki: Path, server: str) -> Path:
        """Credentials signed by the cluster's CA (the Node authorizer and NodeRestriction
        recognise `system:node:<name>` in `system:nodes`) and the config; returns the config."""
        sign_cert(
            cluster_pki,
            "kubelet-client",
            subject=f"/O=system:nodes/CN=system:node:{self.node_name}",
            out_dir=self.pki,
        )
        write_kubeconfig(
            self.work_dir / "kubelet.kubeconfig",
            server=server,
            ca_file=cluster_pki / "ca.crt",
            user=f"system:node:{self.node_name}",
            client_cert=(self.pki / "kubelet-client.crt", self.pki / "kubelet-client.key"),
        )
        config = self.work_dir / "kubelet.json"
        config.write_text(json.dumps(self.config(ca_file=cluster_pki / "ca.crt"), indent=2))
        return config

    def config(self, *, ca_file: Path) -> dict[str, object]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": self.port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            # The apiserver authenticates with its client cert (kubectl logs/exec).
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            # This machine has cgroup v1 and swap; both are fine for tests.
            "failCgroupV1": False,
            "failSwapOn": False,
            # Pods resolve nothing: every address they use is an IP on this machine.
            "resolvConf": "",
            "podLogsDirectory": str(self.work_dir / "pod-logs"),
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            # Imported images (pullPolicy Never) must never be collected, and a shared disk
            # filling up must not evict test pods.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "serializeImagePulls": False,
            "staticPodPath": "",
            "nodeStatusUpdateFrequency": "4s",
            "containerLogMaxSize": "10Mi",
        }

    def argv(self, binary: Path, config: Path) -> list[str]:
        return [
            str(binary),
            f"--config={config}",
            f"--kubeconfig={self.work_dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.root_dir}",
            f"--cert-dir={self.pki}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={self.node_ip}",
            f"--container-runtime-endpoint={self.runtime_endpoint}",
            "--v=1",
        ]
