"""The engine's index of Jobs and pods: watch events, relists, and what it keeps."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from controller.engine.view import View
from controller.snapshots import JobView


def job(name: str, job_id: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"audiojob.dev/job-id": job_id},
            "labels": {"app.kubernetes.io/managed-by": "audiojob-operator"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "big" * 1000}]}}},
        "status": status,
    }


def pod(name: str, job_name: str, job_id: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2026-01-01T00:00:01Z",
            "annotations": {"audiojob.dev/job-id": job_id},
            "labels": {"batch.kubernetes.io/job-name": job_name},
        },
        "status": {"phase": phase},
    }


def test_events_fill_and_empty_the_index() -> None:
    view = View()
    view.apply("job", "ADDED", job("aj-a-1", "a"))
    view.apply("pod", "ADDED", pod("aj-a-1-x", "aj-a-1", "a"))
    assert view.job("aj-a-1") is not None and view.job("aj-a-1").uid == "uid-aj-a-1"
    assert [p.name for p in view.pods_of("aj-a-1")] == ["aj-a-1-x"]
    assert view.job_ids() == ["a"] and view.has_pods_of("a")
    view.apply("pod", "MODIFIED", pod("aj-a-1-x", "aj-a-1", "a", phase="Succeeded"))
    assert view.pods_of("aj-a-1")[0].finished
    view.apply("pod", "DELETED", pod("aj-a-1-x", "aj-a-1", "a"))
    view.apply("job", "DELETED", job("aj-a-1", "a"))
    assert view.job("aj-a-1") is None and view.pods_of("aj-a-1") == []
    assert view.job_ids() == [] and not view.has_pods_of("a")


def test_a_relist_replaces_everything_and_replays_events_that_raced_it() -> None:
    view = View()
    view.apply("job", "ADDED", job("aj-old-1", "old"))
    assert not view.covers(0.0)
    sent = view.begin_list()
    # A Job created while the list was in flight: the list may not show it.
    view.apply("job", "ADDED", job("aj-new-1", "new"))
    view.replace([JobView.from_body(job("aj-b-1", "b"))], [], sent_mono=sent)
    assert view.job("aj-old-1") is None
    assert view.job("aj-b-1") is not None and view.job("aj-new-1") is not None
    assert view.covers(sent - 1) and not view.covers(sent + 1)


class Body(dict[str, Any]):
    """A dict that a weak reference can follow."""


class Items(list[Any]):
    """A list that a weak reference can follow."""


def traced(value: Any, refs: list[weakref.ref[Any]]) -> Any:
    """`value` rebuilt from Body and Items, with a weak reference to each of them in `refs`."""
    if isinstance(value, dict):
        out: Any = Body({k: traced(v, refs) for k, v in value.items()})
    elif isinstance(value, list):
        out = Items(traced(v, refs) for v in value)
    else:
        return value
    refs.append(weakref.ref(out))
    return out


def test_the_index_keeps_snapshots_not_bodies() -> None:
    """Not a body, nor any part of one, outlives its event: not in the index, and not while
    events wait for a relist (a dict has no attribute `spec` either, so looking for one on
    what is kept proves nothing)."""
    view = View()
    refs: list[weakref.ref[Any]] = []
    limits = {"resources": {"limits": {"memory": "1Gi"}}}
    a_pod = pod("aj-a-1-x", "aj-a-1", "a") | {"spec": {"containers": [limits]}}
    view.apply("job", None, traced(job("aj-a-1", "a"), refs))
    view.apply("pod", None, traced(a_pod, refs))
    sent = view.begin_list()
    view.apply("job", "ADDED", traced(job("aj-b-1", "b"), refs))
    view.apply("pod", "ADDED", traced(pod("aj-b-1-x", "aj-b-1", "b"), refs))
    gc.collect()
    assert len(refs) > 10 and [r() for r in refs if r() is not None] == []
    view.replace([], [], sent_mono=sent)
    kept = view.job("aj-b-1")
    assert isinstance(kept, JobView) and kept.uid == "uid-aj-b-1"
    assert [(p.name, p.phase) for p in view.pods_of("aj-b-1")] == [("aj-b-1-x", "Running")]


def test_the_jobs_touched_by_events_since_the_engine_last_asked() -> None:
    """The engine decides again only about these (and about all after a relist)."""
    view = View()
    view.apply("job", "ADDED", job("aj-a-1", "a"))
    view.apply("pod", "ADDED", pod("aj-b-1-x", "aj-b-1", "b"))
    assert view.take_touched() == {"aj-a-1", "aj-b-1"}
    assert view.take_touched() == set()
    # A deleted pod touches the Job it belonged to.
    view.apply("pod", "DELETED", pod("aj-b-1-x", "aj-b-1", "b"))
    assert view.take_touched() == {"aj-b-1"}
