"""yrelay export and import: 200 documents out of one store and into an empty one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from persistence.sqlite import SQLiteStore
from tests.support.mongo_server import MongoServer

DOCUMENTS = 200


def yrelay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=300, check=False
    )


def document_update(index: int) -> bytes:
    doc = Doc()
    doc.get("t", type=Text).insert(0, f"document {index} ✓ " + "x" * (index % 17))
    doc.get("m", type=Map)["index"] = index
    return doc.get_update()


async def seed(data_dir: Path) -> dict[str, bytes]:
    store = SQLiteStore(data_dir)
    await store.open()
    expected = {}
    for index in range(DOCUMENTS):
        name = f"team {index % 7}/notes/{index}"
        update = document_update(index)
        store.append(name, update)
        expected[name] = update
    await store.close()
    return expected


def content(update: bytes) -> tuple[str, dict, bytes]:
    doc = Doc()
    doc.apply_update(update)
    return str(doc.get("t", type=Text)), doc.get("m", type=Map).to_py(), doc.get_state()


def read_export(folder: Path) -> dict[str, bytes]:
    exported = {}
    for metadata_path in folder.glob("*.json"):
        metadata = json.loads(metadata_path.read_text())
        exported[metadata["name"]] = metadata_path.with_suffix(".yjs").read_bytes()
    return exported


def assert_same_documents(expected: dict[str, bytes], exported: dict[str, bytes]) -> None:
    assert sorted(exported) == sorted(expected)
    for name, update in expected.items():
        assert content(exported[name]) == content(update), name


@pytest.mark.slow
def test_export_import_round_trip_sqlite(tmp_path: Path) -> None:
    expected = asyncio.run(seed(tmp_path / "source"))
    first = yrelay("export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "source"))
    assert first.returncode == 0, first.stderr
    assert f"{DOCUMENTS} documents exported" in first.stderr
    assert_same_documents(expected, read_export(tmp_path / "out"))

    imported = yrelay("import", str(tmp_path / "out"), "--data-dir", str(tmp_path / "empty"))
    assert imported.returncode == 0, imported.stderr
    second = yrelay("export", str(tmp_path / "again"), "--data-dir", str(tmp_path / "empty"))
    assert second.returncode == 0, second.stderr
    assert_same_documents(expected, read_export(tmp_path / "again"))


@pytest.mark.slow
def test_import_into_mongodb(tmp_path: Path) -> None:
    expected = asyncio.run(seed(tmp_path / "source"))
    assert yrelay("export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "source")).returncode == 0
    mongo = MongoServer(tmp_path / "mongo").start()
    try:
        options = ["--mongodb", mongo.url, "--mongodb-database", "restored"]
        imported = yrelay("import", str(tmp_path / "out"), *options)
        assert imported.returncode == 0, imported.stderr
        again = yrelay("export", str(tmp_path / "again"), *options)
        assert again.returncode == 0, again.stderr
    finally:
        mongo.stop()
    assert_same_documents(expected, read_export(tmp_path / "again"))


def test_import_rejects_tampered_file(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path / "source"))
    assert yrelay("export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "source")).returncode == 0
    victim = next((tmp_path / "out").glob("*.yjs"))
    victim.write_bytes(victim.read_bytes() + b"\x00")
    result = yrelay("import", str(tmp_path / "out"), "--data-dir", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "does not match the SHA-256" in result.stderr
    assert not (tmp_path / "empty" / "yrelay.sqlite3").exists() or not asyncio.run(_names(tmp_path / "empty"))


async def _names(data_dir: Path) -> list[str]:
    store = SQLiteStore(data_dir)
    await store.open()
    names = await store.list_documents()
    await store.close()
    return names
