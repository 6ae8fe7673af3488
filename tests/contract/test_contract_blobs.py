"""BlobStore contract: objects on the filesystem and on S3 (moto); multipart and presigned URLs
over real HTTP on moto's server."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import UploadedPart

MIB = 1024 * 1024


def test_put_get_exists_size(ports):
    ports.blobs.put("outputs/t1/0.png", b"\x89PNG data", "image/png")

    assert ports.blobs.get("outputs/t1/0.png") == b"\x89PNG data"
    assert ports.blobs.exists("outputs/t1/0.png")
    assert ports.blobs.size("outputs/t1/0.png") == 9
    assert not ports.blobs.exists("outputs/t1/1.png")


def test_put_replaces(ports):
    ports.blobs.put("a/b", b"one")
    ports.blobs.put("a/b", b"two!")
    assert ports.blobs.get("a/b") == b"two!"


def test_missing_object_is_not_found(ports):
    with pytest.raises(NotFoundError):
        ports.blobs.get("nope")
    with pytest.raises(NotFoundError):
        ports.blobs.size("nope")
    with pytest.raises(NotFoundError):
        list(ports.blobs.iter_chunks("nope"))


def test_iter_chunks_streams_the_object(ports):
    data = bytes(range(256)) * 40  # 10 KiB
    ports.blobs.put("models/m/model.bin", data)

    chunks = list(ports.blobs.iter_chunks("models/m/model.bin", chunk_size=4096))

    assert b"".join(chunks) == data
    assert all(len(c) <= 4096 for c in chunks) and len(chunks) >= 3


def test_download_to_a_file(ports, tmp_path):
    ports.blobs.put("models/m/model.bin", b"weights" * 1000)
    dest = tmp_path / "cache" / "deep" / "model.bin"

    ports.blobs.download("models/m/model.bin", dest)

    assert dest.read_bytes() == b"weights" * 1000


def test_download_missing_is_not_found(ports, tmp_path):
    with pytest.raises(NotFoundError):
        ports.blobs.download("nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_delete_prefix(ports):
    for key in ["outputs/t1/0.png", "outputs/t1/1.png", "outputs/t2/0.png", "inputs/t1.png"]:
        ports.blobs.put(key, b"x")

    assert ports.blobs.delete_prefix("outputs/t1/") == 2

    assert not ports.blobs.exists("outputs/t1/0.png")
    assert ports.blobs.exists("outputs/t2/0.png") and ports.blobs.exists("inputs/t1.png")
    assert ports.blobs.delete_prefix("outputs/t1/") == 0


def test_url_is_a_string(ports):
    ports.blobs.put("outputs/t1/0.png", b"png")
    assert ports.blobs.url("outputs/t1/0.png", 60).startswith("http")


# --- multipart: real HTTP PUTs on moto's server (aws); write_part stands in for them (local) ---
def upload(http_blobs, key, parts):
    upload_id = http_blobs.blobs.create_multipart(key)
    uploaded = [
        UploadedPart(part_number=n, etag=http_blobs.put_part(key, upload_id, n, data))
        for n, data in enumerate(parts, start=1)
    ]
    return upload_id, uploaded


def test_multipart_upload_joins_the_parts(http_blobs):
    parts = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"tail"]
    upload_id, uploaded = upload(http_blobs, "models/m/model.safetensors", parts)

    http_blobs.blobs.complete_multipart("models/m/model.safetensors", upload_id, uploaded)

    digest = hashlib.sha256()
    for chunk in http_blobs.blobs.iter_chunks("models/m/model.safetensors"):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()
    assert http_blobs.blobs.size("models/m/model.safetensors") == 10 * MIB + 4


def test_complete_unknown_upload_is_not_found(http_blobs):
    with pytest.raises(NotFoundError):
        http_blobs.blobs.complete_multipart(
            "models/m/x", "f" * 32, [UploadedPart(part_number=1, etag="x")]
        )


def test_multipart_etag_mismatch_is_invalid(http_blobs):
    upload_id, uploaded = upload(http_blobs, "models/m/x", [b"a" * (5 * MIB), b"b"])
    wrong = [uploaded[0], UploadedPart(part_number=2, etag='"' + "0" * 32 + '"')]

    with pytest.raises(InvalidInputError):
        http_blobs.blobs.complete_multipart("models/m/x", upload_id, wrong)
    assert not http_blobs.blobs.exists("models/m/x")


def test_multipart_parts_out_of_order_are_invalid(http_blobs):
    upload_id, uploaded = upload(http_blobs, "models/m/x", [b"a" * (5 * MIB), b"b"])
    with pytest.raises(InvalidInputError):
        http_blobs.blobs.complete_multipart("models/m/x", upload_id, uploaded[::-1])
    with pytest.raises(InvalidInputError):
        http_blobs.blobs.complete_multipart("models/m/x", upload_id, [])


def test_multipart_missing_part_is_invalid(http_blobs):
    upload_id, uploaded = upload(http_blobs, "models/m/x", [b"only part"])
    never = [uploaded[0], UploadedPart(part_number=2, etag='"' + "0" * 32 + '"')]
    with pytest.raises(InvalidInputError):
        http_blobs.blobs.complete_multipart("models/m/x", upload_id, never)


def test_aborted_upload_is_gone(http_blobs):
    upload_id, uploaded = upload(http_blobs, "models/m/x", [b"part"])

    http_blobs.blobs.abort_multipart("models/m/x", upload_id)
    http_blobs.blobs.abort_multipart("models/m/x", upload_id)  # twice is fine

    with pytest.raises(NotFoundError):
        http_blobs.blobs.complete_multipart("models/m/x", upload_id, uploaded)
    assert not http_blobs.blobs.exists("models/m/x")


def test_complete_under_another_key_is_not_found(http_blobs):
    if http_blobs.backend == "aws":
        pytest.skip("moto ignores the key of an upload id (S3 answers NoSuchUpload)")
    upload_id, uploaded = upload(http_blobs, "models/m/x", [b"part"])
    with pytest.raises(NotFoundError):
        http_blobs.blobs.complete_multipart("models/m/other-key", upload_id, uploaded)


def test_presigned_get_url_serves_the_object(http_blobs):
    if http_blobs.backend == "local":
        pytest.skip("the local server that serves signed URLs is tested with the local stack")
    http_blobs.blobs.put("outputs/t1/0.png", b"\x89PNG!", "image/png")

    resp = httpx.get(http_blobs.blobs.url("outputs/t1/0.png", 60), timeout=10)

    assert resp.status_code == 200
    assert resp.content == b"\x89PNG!"


def test_put_stream_stores_chunks_of_unknown_total(ports):
    chunks = [bytes([n]) * 1000 for n in range(50)]

    size = ports.blobs.put_stream("models/lora/x/v1", iter(chunks))

    assert size == 50_000
    assert ports.blobs.get("models/lora/x/v1") == b"".join(chunks)


def test_put_stream_that_fails_leaves_nothing(ports):
    def broken():
        yield b"a" * 1000
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        ports.blobs.put_stream("models/lora/x/v1", broken())
    assert not ports.blobs.exists("models/lora/x/v1")


def test_list_multipart_lists_uploads_in_progress_under_a_prefix(ports):
    first = ports.blobs.create_multipart("models/checkpoint/a/v1")
    second = ports.blobs.create_multipart("models/lora/b/v1")
    ports.blobs.create_multipart("inputs/other")

    found = {u.upload_id: u for u in ports.blobs.list_multipart("models/")}

    assert set(found) == {first, second}
    assert found[first].key == "models/checkpoint/a/v1"
    if ports.backend == "local":  # moto answers a fixed Initiated (2010-11-10) for every upload
        assert abs(found[first].initiated - time.time()) < 120
    assert 0 < found[first].initiated < time.time() + 120
    ports.blobs.abort_multipart("models/checkpoint/a/v1", first)
    assert [u.upload_id for u in ports.blobs.list_multipart("models/")] == [second]
