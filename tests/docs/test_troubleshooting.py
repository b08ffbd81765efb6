"""Every error sentence the code can emit has a row in docs/operations.md's troubleshooting
table (tests/docs/sentences.py says how the sentences are found)."""

from __future__ import annotations

from pathlib import Path

from tests.docs.sentences import (
    ROOT,
    Sentence,
    missing,
    product_sentences,
    sentences_in,
    troubleshooting_table,
)

OPERATIONS = ROOT / "docs" / "operations.md"


def table() -> str:
    return troubleshooting_table(OPERATIONS.read_text())


def test_every_sentence_the_code_emits_has_a_row() -> None:
    absent = missing(product_sentences(), table())
    assert not absent, (
        "error sentences without a row in the troubleshooting table of docs/operations.md "
        "(add a row: sentence, cause, fix):\n" + "\n".join(map(str, absent))
    )


def test_the_search_finds_the_sentences_it_must() -> None:
    """Not vacuous: the enumeration sees each kind of place a sentence is born."""
    stems = {s.stem for s in product_sentences()}
    for expected in (
        "memory limit (OOMKilled); raise the memory limit for",  # lifecycle Fail
        "the runner sent no heartbeat for",  # lifecycle Retry
        "is corrupt or not a media file",  # runner PermanentError
        "yt-dlp could not download",  # RunnerError
        "unknown job type",  # PayloadError
        "url must start with http:// or https://, got",  # ValueError in a payload model
        "the database did not answer within the statement timeout",  # store Fault
        "invalid setting",  # SettingsError
        "job pods fetch only from public addresses (if this source is trusted, add",  # builder
        "DNS lookup failed",  # a reason returned by a builder function
        "the runner was stopped by SIGTERM; partial output was discarded",  # FailureMessage
    ):
        assert expected in stems, expected
    assert any(s.where.startswith("charts/") for s in product_sentences()), "chart fail"
    assert len(stems) > 60


def test_a_new_sentence_without_a_row_fails() -> None:
    source = (
        "from runner.errors import PermanentError, TransientError\n"
        "def f(x):\n"
        "    raise PermanentError(f'the tape in {x} snapped mid-reel (permanent)')\n"
        "def g(x, y):\n"
        "    raise TransientError(f'{x} ' + 'went quiet for ' + str(y) + ' s')\n"
        "def h(e):\n"
        "    raise PermanentError(str(e))  # passes text through: no new sentence\n"
    )
    found = sentences_in(source, "runner/new.py")
    assert [s.stem for s in found] == ["snapped mid-reel", "went quiet for"]
    assert missing(found, table()) == found
    row = "| `the tape in <x> snapped mid-reel` | a | b |\n| `<x> went quiet for <n> s` | c | d |"
    assert missing(found, troubleshooting_table(f"## Troubleshooting\n\n{row}\n")) == []


def test_short_pieces_must_all_appear_in_order() -> None:
    [found] = sentences_in("def f(t, e):\n    raise PayloadError(f'bad {t} row: {e}')\n", "x.py")
    assert found.stem == "bad … row"
    assert missing([found], "| bad ingest row: why |") == []
    assert missing([found], "| row bad |") == [found]
    assert isinstance(found, Sentence)
    assert Path(found.where.split(":")[0]).name == "x.py"
