"""s3://bucket/prefix outputs and inputs, against moto's server on loopback (real HTTP, boto3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from runner.contract import EXIT_OK, EXIT_PERMANENT
from tests.runner.conftest import Media, MediaServer, Route, Runner, duration_of


@pytest.fixture
def s3_env() -> Iterator[dict[str, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    yield env
    server.stop()


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def test_ingest_then_save_through_object_storage(
    tmp_path: Path, s3_env: dict[str, str], http_server: MediaServer, media: Media
) -> None:
    s3 = s3_client(s3_env)
    s3.create_bucket(Bucket="audio")
    runner = Runner(tmp=tmp_path, output="s3://audio/jobs")
    url = http_server.serve("/noise.mp3", Route(media.noise.read_bytes(), "audio/mpeg"))

    ingest = runner.run("ingest", {"url": url, "format": "flac"}, job_id="up-1", **s3_env)
    assert ingest.code == EXIT_OK, ingest.stderr
    assert ingest.result["output"] == "s3://audio/jobs/up-1.flac"
    head = s3.head_object(Bucket="audio", Key="jobs/up-1.flac")
    assert head["ContentType"] == "audio/flac" and head["ContentLength"] == ingest.result["size"]
    meta = json.loads(s3.get_object(Bucket="audio", Key="jobs/up-1.flac.json")["Body"].read())
    assert meta["source_url"] == url

    # A relative input is a key under the same prefix; an s3:// input may be anywhere.
    for ref, name in [("up-1.flac", "a.wav"), ("s3://audio/jobs/up-1.flac", "b.wav")]:
        save = runner.run(
            "save",
            {"input": ref, "format": "wav", "output_name": name,
             "edits": [{"op": "trim", "start": 1, "end": 3}]},
            **s3_env,
        )  # fmt: skip
        assert save.code == EXIT_OK, save.stderr
        local = tmp_path / name
        s3.download_file("audio", f"jobs/{name}", str(local))
        assert duration_of(local) == pytest.approx(2.0, abs=0.05)
    assert runner.scratch_leftovers == []


def test_missing_bucket_and_missing_key_are_permanent(
    tmp_path: Path, s3_env: dict[str, str], http_server: MediaServer, media: Media
) -> None:
    s3_client(s3_env).create_bucket(Bucket="audio")
    url = http_server.serve("/noise.mp3", Route(media.noise.read_bytes(), "audio/mpeg"))
    run = Runner(tmp=tmp_path, output="s3://no-such-bucket/x").run("ingest", {"url": url}, **s3_env)
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent")
    assert run.message["error"].startswith(
        "could not upload to s3://no-such-bucket/x/job-1.mp3: NoSuchBucket"
    )
    run = Runner(tmp=tmp_path, output="s3://audio").run("save", {"input": "gone.wav"}, **s3_env)
    assert run.message == {
        "ok": False,
        "kind": "permanent",
        "error": "could not download s3://audio/gone.wav: no such object (permanent)",
    }
