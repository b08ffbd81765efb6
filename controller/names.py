"""Kubernetes names derived from job ids: deterministic, valid DNS labels, ≤ 63 chars.

A re-create after a crash computes the same name and gets AlreadyExists, never a duplicate.
"""

from __future__ import annotations

import hashlib
import re

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_HASH_LEN = 8
_SLUG_MAX = 30  # aj- + slug + - + hash + - + attempt (≤ 10 digits) stays within 63


# Not cached here: each running attempt keeps its Job's name (engine.attempts), so a name is
# computed once per attempt; a cache of 16,384 names per function grew the controller's memory
# with every row of a long run until full (bench/README.md, run L).
def job_key(job_id: str) -> str:
    """`<slug>-<hash>`: readable, unique per job id (the hash covers the exact id), and a valid
    label value."""
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    slug = _NOT_DNS.sub("-", job_id.lower()).strip("-")[:_SLUG_MAX].strip("-")
    return f"{slug}-{digest}" if slug else digest


def job_name(job_id: str, attempt: int) -> str:
    """`aj-<slug>-<hash>-<attempt>`, the Kubernetes Job name of one attempt of one row."""
    name = f"aj-{job_key(job_id)}-{attempt}"
    assert len(name) <= 63, name
    return name
