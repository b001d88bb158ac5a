"""pytest_chatstream._staging: commit on success, keep the old cassette otherwise, claims."""

from __future__ import annotations

import threading
from pathlib import Path

from pytest_chatstream._staging import ClaimBoard, commit, discard, new_staging_dir, tree_size


def _fill(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(text)


def test_commit_replaces_the_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "cassettes" / "t"
    _fill(cassette, "old")
    staging = new_staging_dir(cassette)
    assert staging.parent == cassette.parent and staging.name.startswith(".t.recording-")
    _fill(staging, "new!")
    assert commit(staging, cassette) == 4
    assert (cassette / "manifest.json").read_text() == "new!"
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["t"]  # nothing left beside it


def test_commit_creates_a_missing_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "deep" / "er" / "t"
    staging = new_staging_dir(cassette)
    _fill(staging, "x")
    commit(staging, cassette)
    assert (cassette / "manifest.json").read_text() == "x"


def test_discard_keeps_the_existing_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "t"
    _fill(cassette, "old")
    staging = new_staging_dir(cassette)
    _fill(staging, "half-written")
    discard(staging)
    assert (cassette / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_tree_size_counts_nested_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"123")
    assert tree_size(tmp_path) == 8


def test_claim_is_granted_once_and_released_on_failure(tmp_path: Path) -> None:
    board = ClaimBoard(tmp_path / "board")
    cassette = tmp_path / "shared"
    assert board.claim(cassette) and not board.claim(cassette)
    board.release(cassette, recorded=False)  # its test failed: the next test may record it
    assert board.acquire_or_wait(cassette, timeout=1)
    board.release(cassette, recorded=True)
    assert not board.acquire_or_wait(cassette, timeout=1)  # recorded in this run: replay it
    board.remove()
    assert not (tmp_path / "board").exists()


def test_waiters_replay_what_the_first_claimant_recorded(tmp_path: Path) -> None:
    board = ClaimBoard(tmp_path / "board")
    cassette = tmp_path / "shared"
    assert board.acquire_or_wait(cassette, timeout=1)
    answers: list[bool] = []
    waiters = [threading.Thread(target=lambda: answers.append(board.acquire_or_wait(cassette, 10, 0.01)))
               for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    board.release(cassette, recorded=True)
    for waiter in waiters:
        waiter.join()
    assert answers == [False] * 4


def test_boards_of_one_run_share_their_claims(tmp_path: Path) -> None:
    first, second = ClaimBoard.for_run("run-x-test"), ClaimBoard.for_run("run-x-test")
    try:
        assert first.claim(tmp_path / "c") and not second.claim(tmp_path / "c")
        assert ClaimBoard.for_run("another-run-test").claim(tmp_path / "c")
    finally:
        first.remove()
        ClaimBoard.for_run("another-run-test").remove()
