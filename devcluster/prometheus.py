"""A real Prometheus (built by `make binaries`) for the tests: it scrapes the given targets
every second and answers PromQL through its HTTP API. No web UI is built or served."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from devcluster.controlplane import binary, free_port
from devcluster.procs import terminate, wait_while_running


@dataclass(frozen=True)
class Target:
    job: str
    address: str
    """host:port serving /metrics."""
    labels: dict[str, str]
    """Target labels, as a ServiceMonitor would add (namespace, …)."""


class PromQLError(Exception):
    """Prometheus refused a query: the sentence is its own (e.g. a parse error)."""


class Prometheus:
    def __init__(
        self, targets: list[Target], *, workdir: Path, rule_files: tuple[Path, ...] = ()
    ) -> None:
        """`workdir` holds the config, the log and the TSDB; `rule_files` are evaluated
        every second."""
        self.targets = targets
        self.rule_files = rule_files
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": t.job,
                    "static_configs": [{"targets": [t.address], "labels": t.labels}],
                }
                for t in self.targets
            ],
        }

    def __enter__(self) -> Self:
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(self.config()))
        log = (self.dir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(binary("prometheus")),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_while_running(
            lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200,
            "Prometheus to be ready",
            procs={"prometheus": self.proc},
            log=lambda _: self.dir / "prometheus.log",
            timeout=60,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read())
        if answer.get("status") != "success":
            raise PromQLError(f"{answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's series; a scalar as one series)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def parse(self, expr: str) -> dict[str, Any]:
        """The expression's syntax tree, as Prometheus itself parses it."""
        tree: dict[str, Any] = self.api("parse_query", query=expr)
        return tree

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its `health` and `lastError`."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def targets_up(self) -> dict[str, str]:
        """job -> health of its target."""
        active = self.api("targets")["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}
