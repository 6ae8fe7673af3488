"""S3 adapter of the blob port: objects, presigned GET URLs and presigned multipart uploads."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import BlobStore, MultipartUpload, UploadedPart

_MISSING = {"NoSuchKey", "404", "NotFound"}
_TRANSFER = TransferConfig(
    multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20, max_concurrency=16
)
_BAD_PARTS = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterable of byte chunks (what upload_fileobj reads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buf = chunk
        data, self._buf = self._buf[: len(view)], self._buf[len(view) :]
        view[: len(data)] = data
        self.size += len(data)
        return len(data)


class S3BlobStore(BlobStore):
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @staticmethod
    def _check_key(key: str) -> None:
        # The same keys the local store takes: no empty key, no "folder" key.
        if not key or key.endswith("/"):
            raise InvalidInputError("key", f"invalid object key {key!r}")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._check_key(key)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def _get_object(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if _code(e) in _MISSING:
                raise NotFoundError(f"object {key} not found") from None
            raise

    def get(self, key: str) -> bytes:
        body = self._get_object(key)["Body"]
        with body:
            return bytes(body.read())

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as e:
            if _code(e) in _MISSING:
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise NotFoundError(f"object {key} not found")
        return int(head["ContentLength"])

    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        body = self._get_object(key)["Body"]
        with body:
            yield from body.iter_chunks(chunk_size)

    def download(self, key: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            # s3transfer writes to a temporary name and renames: no half file on failure
            # a large object comes down in parallel ranged GETs (64 MiB parts, 16 at a time)
            self.client.download_file(self.bucket, key, str(dest), Config=_TRANSFER)
        except ClientError as e:
            if _code(e) in _MISSING:
                raise NotFoundError(f"object {key} not found") from None
            raise

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if not keys:
                continue
            # a page holds at most 1000 keys, which is what one delete_objects takes
            resp = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
            )
            errors = resp.get("Errors", [])
            if errors:
                raise RuntimeError(f"could not delete {len(errors)} objects under {prefix!r}")
            count += len(keys)
        return count

    def url(self, key: str, expires_s: int) -> str:
        self._check_key(key)
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )
        )

    # --- multipart -----------------------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        self._check_key(key)
        resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return str(resp["UploadId"])

    def part_url(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        if not 1 <= part_number <= 10000:
            raise InvalidInputError("partNumber", "must be 1..10000")
        return str(
            self.client.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "UploadId": upload_id,
                    "PartNumber": part_number,
                },
                ExpiresIn=expires_s,
            )
        )

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        numbers = [p.part_number for p in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise InvalidInputError("parts", "must list each part once, in ascending order")
        # Check the list against what S3 received first, to name the faulty part in the error
        # (CompleteMultipartUpload only answers "InvalidPart").
        received = self._received_parts(key, upload_id)
        for part in parts:
            if part.part_number not in received:
                raise InvalidInputError("parts", f"part {part.part_number} was never uploaded")
            if received[part.part_number] != part.etag.strip('"'):
                raise InvalidInputError("parts", f"part {part.part_number}: ETag does not match")
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": p.part_number, "ETag": f'"{p.etag.strip(chr(34))}"'}
                        for p in parts
                    ]
                },
            )
        except ClientError as e:
            code = _code(e)
            if code == "NoSuchUpload":
                raise NotFoundError(f"upload {upload_id} not found") from None
            if code in _BAD_PARTS:
                message = e.response.get("Error", {}).get("Message", code)
                raise InvalidInputError("parts", f"{code}: {message}") from None
            raise

    def _received_parts(self, key: str, upload_id: str) -> dict[int, str]:
        """Part number -> ETag (unquoted) of every part S3 holds for the upload."""
        received: dict[int, str] = {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            for page in pages:
                for part in page.get("Parts", []):
                    received[int(part["PartNumber"])] = str(part["ETag"]).strip('"')
        except ClientError as e:
            if _code(e) == "NoSuchUpload":
                raise NotFoundError(f"upload {upload_id} not found") from None
            raise
        return received

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        received = self._received_parts(key, upload_id)
        return [UploadedPart(part_number=n, etag=received[n]) for n in sorted(received)]

    def list_multipart(self, prefix: str) -> list[MultipartUpload]:
        found = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                found.append(
                    MultipartUpload(
                        key=upload["Key"],
                        upload_id=upload["UploadId"],
                        initiated=upload["Initiated"].timestamp(),
                    )
                )
        return found

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        self._check_key(key)
        reader = _ChunkReader(chunks)
        # s3transfer reads the stream in parts and uploads them as a multipart upload (a
        # single PUT when small); an upload that fails is aborted, so no half object appears
        self.client.upload_fileobj(reader, self.bucket, key)
        return reader.size

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as e:
            if _code(e) != "NoSuchUpload":
                raise
