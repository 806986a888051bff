"""The web area: a manifest of sha256 hashes, and never a byte served that does not match it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from gwms.factory import webarea
from gwms.factory.webarea import (
    MANIFEST,
    FileChangedError,
    WebArea,
    WebAreaError,
    build_manifest,
    install_web_area,
    is_plain_name,
    read_manifest,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for gwms/factory/web_area/, so the tests do not depend on its contents."""
    directory = tmp_path / "packaged"
    directory.mkdir()
    (directory / "README.md").write_text("what this directory is\n")
    (directory / "glidein_startup.sh").write_bytes(b"#!/bin/sh\necho packaged\n")
    (directory / "glidein_startup.sh").chmod(0o755)
    (directory / "condor_config.tpl").write_bytes(b"START = True\n")
    monkeypatch.setattr(webarea, "PACKAGED_DIR", directory)
    return directory


@pytest.fixture
def area(tmp_path: Path) -> Path:
    directory = tmp_path / "web"
    directory.mkdir()
    (directory / "a.sh").write_bytes(b"echo a\n")
    (directory / "b.tar.gz").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    build_manifest(directory)
    return directory


@pytest.mark.parametrize("name", ["glidein_startup.sh", "condor-24.0.tar.gz", "a+b_c.txt", "X"])
def test_plain_names_are_accepted(name: str) -> None:
    assert is_plain_name(name)


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a..b", "-rf", "a b", "é.sh", "a\n"]
)
def test_names_that_could_escape_or_confuse_are_refused(name: str) -> None:
    assert not is_plain_name(name)


def test_the_manifest_maps_every_file_to_its_sha256_and_is_written_to_disk(area: Path) -> None:
    expected = {p.name: sha(p.read_bytes()) for p in area.iterdir() if p.name != MANIFEST}
    assert read_manifest(area) == expected
    assert json.loads((area / MANIFEST).read_text()) == expected


def test_the_manifest_ignores_dotfiles_and_itself(area: Path) -> None:
    (area / ".partial-download").write_text("x")
    assert set(build_manifest(area)) == {"a.sh", "b.tar.gz"}


def test_a_subdirectory_in_the_web_area_is_an_error_naming_it(area: Path) -> None:
    (area / "extra").mkdir()
    with pytest.raises(WebAreaError, match=r"web/extra: only plain files"):
        build_manifest(area)


def test_install_copies_packaged_and_operator_files_and_builds_the_manifest(
    tmp_path: Path, packaged: Path
) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / "vo-setup.sh").write_bytes(b"echo vo\n")
    dest = tmp_path / "state" / "web"
    manifest = install_web_area(dest, [operator])
    assert manifest == {
        "glidein_startup.sh": sha(b"#!/bin/sh\necho packaged\n"),
        "condor_config.tpl": sha(b"START = True\n"),
        "vo-setup.sh": sha(b"echo vo\n"),
    }
    assert not (dest / "README.md").exists(), "the packaged README is not a pilot file"
    assert os.access(dest / "glidein_startup.sh", os.X_OK), "the exec bit is kept"
    assert read_manifest(dest) == manifest


def test_operator_files_override_packaged_ones_of_the_same_name(
    tmp_path: Path, packaged: Path
) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / "glidein_startup.sh").write_bytes(b"#!/bin/sh\necho site version\n")
    manifest = install_web_area(tmp_path / "web", [operator])
    assert manifest["glidein_startup.sh"] == sha(b"#!/bin/sh\necho site version\n")


def test_reinstalling_removes_files_no_longer_provided(tmp_path: Path, packaged: Path) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / "old.sh").write_text("old\n")
    dest = tmp_path / "web"
    install_web_area(dest, [operator])
    (operator / "old.sh").unlink()
    manifest = install_web_area(dest, [operator])
    assert "old.sh" not in manifest
    assert not (dest / "old.sh").exists()


def test_a_missing_operator_directory_is_an_error_naming_it(tmp_path: Path, packaged: Path) -> None:
    with pytest.raises(WebAreaError, match=r"nowhere: pilot file directory not found"):
        install_web_area(tmp_path / "web", [tmp_path / "nowhere"])


def test_the_real_packaged_directory_installs(tmp_path: Path) -> None:
    packaged = Path(webarea.__file__).with_name("web_area")
    manifest = install_web_area(tmp_path / "web")
    shipped = {p.name for p in packaged.iterdir() if p.is_file() and p.name != "README.md"}
    assert set(manifest) == shipped


def test_a_listed_file_opens_with_its_verified_hash(area: Path) -> None:
    served = WebArea(area)
    opened = served.open("b.tar.gz")
    assert opened is not None
    with opened.handle:
        data = opened.handle.read()
    assert opened.sha256 == sha(data) == read_manifest(area)["b.tar.gz"]
    assert opened.size == len(data)


def test_files_not_in_the_manifest_are_not_served(area: Path) -> None:
    (area / "new.sh").write_text("added after the manifest\n")
    served = WebArea(area)
    assert served.open("new.sh") is None
    assert served.open("../web/a.sh") is None
    assert served.open(MANIFEST) is None


def test_a_file_changed_after_the_manifest_is_refused_not_served(area: Path) -> None:
    served = WebArea(area)
    first = served.open("a.sh")
    assert first is not None
    first.handle.close()
    (area / "a.sh").write_bytes(b"echo b\n")  # same size as before: only the hash tells
    with pytest.raises(FileChangedError, match=r"a.sh now has sha256 .* rebuild the manifest"):
        served.open("a.sh")
    assert [problem.name for problem in served.verify()] == ["a.sh"]


def test_restoring_the_file_or_rebuilding_the_manifest_serves_it_again(area: Path) -> None:
    served = WebArea(area)
    (area / "a.sh").write_bytes(b"echo new\n")
    with pytest.raises(FileChangedError):
        served.open("a.sh")
    build_manifest(area)
    opened = served.open("a.sh")
    assert opened is not None
    opened.handle.close()
    assert opened.sha256 == sha(b"echo new\n")
    assert served.verify() == []


def test_a_file_changed_moments_ago_is_rehashed_on_every_open(
    area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timestamps are coarse: a rewrite in the same tick may leave the stat unchanged."""
    served = WebArea(area)
    calls: list[object] = []
    real = webarea._hash_handle
    monkeypatch.setattr(webarea, "_hash_handle", lambda h: calls.append(h) or real(h))
    for _ in range(2):
        opened = served.open("a.sh")
        assert opened is not None
        opened.handle.close()
    assert len(calls) == 2


def test_a_vanished_file_is_reported_as_missing(area: Path) -> None:
    (area / "a.sh").unlink()
    with pytest.raises(FileChangedError, match=r"a\.sh is missing"):
        WebArea(area).open("a.sh")


def test_an_unchanged_file_is_hashed_once(area: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webarea, "RACY_WINDOW_NS", 0)  # the file was written a moment ago
    served = WebArea(area)
    calls: list[object] = []
    real = webarea._hash_handle

    def counting(handle: object) -> str:
        calls.append(handle)
        return real(handle)  # type: ignore[arg-type]

    monkeypatch.setattr(webarea, "_hash_handle", counting)
    for _ in range(3):
        opened = served.open("b.tar.gz")
        assert opened is not None
        opened.handle.close()
    assert len(calls) == 1


def test_a_web_area_without_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(WebAreaError, match=r"manifest.json: the web area has no manifest"):
        WebArea(tmp_path).manifest()


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[]", b'{"../x": "' + b"0" * 64 + b'"}', b'{"a.sh": "ABC"}'],
    ids=["syntax", "not-a-map", "traversal-name", "bad-hash"],
)
def test_a_corrupt_manifest_is_an_error_saying_rebuild(area: Path, content: bytes) -> None:
    (area / MANIFEST).write_bytes(content)
    with pytest.raises(WebAreaError, match=r"manifest.json: .*rebuild it"):
        WebArea(area).open("a.sh")
