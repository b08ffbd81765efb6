"""The real node: containerd, runc, the kubelet and a bridge network on this machine."""

from devcluster.node.cgroups import NodeUnavailable
from devcluster.node.kubelet import TAINT_KEY
from devcluster.node.realnode import RealNode

__all__ = ["TAINT_KEY", "NodeUnavailable", "RealNode"]
