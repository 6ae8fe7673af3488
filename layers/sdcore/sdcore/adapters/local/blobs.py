"""Objects as files under one folder, with HMAC-signed expiring URLs that the local server
honours (the local counterpart of S3 presigned URLs)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import BlobStore, MultipartUpload, UploadedPart


def _atomic_write(path: Path, chunks: Iterator[bytes] | list[bytes]) -> str:
    """Write via a temporary file and rename, so a reader never sees half a file. Returns md5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                md5.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return md5.hexdigest()


def _secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class FileBlobStore(BlobStore):
    def __init__(self, root: Path, base_url: str, now: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.uploads = self.root / "uploads"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self._key = _secret(self.root / "url-signing.key")
        self.now = now

    # --- objects -------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        path = (self.objects / key).resolve()
        if not path.is_relative_to(self.objects.resolve()) or key.endswith("/") or not key:
            raise InvalidInputError("key", f"invalid object key {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        _atomic_write(self.path(key), [data])

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"object {key} not found") from None

    def local_path(self, key: str) -> Path | None:
        """The object's file; None if there is none (a key that leads out of the store names
        no object: a signed URL over such a path finds nothing, rather than failing)."""
        try:
            path = self.path(key)
        except InvalidInputError:
            return None
        return path if path.is_file() else None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"object {key} not found") from None

    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        try:
            fh = self.path(key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"object {key} not found") from None
        with fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def download(self, key: str, dest: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise NotFoundError(f"object {key} not found")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def delete_prefix(self, prefix: str) -> int:
        base = (self.objects / prefix).resolve()
        if not base.is_relative_to(self.objects.resolve()):
            raise InvalidInputError("prefix", f"invalid prefix {prefix!r}")
        if base.is_file():
            base.unlink()
            return 1
        count = 0
        for path in sorted(self.objects.rglob("*"), reverse=True):
            rel = path.relative_to(self.objects).as_posix()
            if rel.startswith(prefix):
                if path.is_file():
                    path.unlink()
                    count += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        return count

    # --- signed URLs ---------------------------------------------------------------------------
    def _sign(self, resource: str, expires: int) -> str:
        msg = f"{resource}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def _signed(self, resource: str, expires_s: int) -> str:
        expires = int(self.now() + expires_s)
        query = urlencode({"expires": expires, "signature": self._sign(resource, expires)})
        return f"{self.base_url}{quote(resource)}?{query}"

    def verify(self, resource: str, expires: str, signature: str) -> bool:
        """Is this (path, expires, signature) a URL we issued that has not expired?"""
        try:
            exp = int(expires)
        except ValueError:
            return False
        good = hmac.compare_digest(self._sign(resource, exp), signature)
        return good and exp >= self.now()

    def url(self, key: str, expires_s: int) -> str:
        self.path(key)
        return self._signed(f"/files/{key}", expires_s)

    # --- multipart -----------------------------------------------------------------------------
    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise NotFoundError(f"upload {upload_id} not found")
        return self.uploads / upload_id

    def create_multipart(self, key: str) -> str:
        self.path(key)
        upload_id = secrets.token_hex(16)
        folder = self._upload_dir(upload_id)
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"key": key, "created": self.now()}))
        return upload_id

    def part_url(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        return self._signed(f"/uploads/{upload_id}/{part_number}", expires_s)

    def write_part(
        self,
        upload_id: str,
        part_number: int,
        chunks: Iterator[bytes],
        content_md5: str | None = None,
    ) -> str:
        """Store one part (what the local server does on a signed PUT); returns its ETag.

        `content_md5`: the request's Content-MD5 header (base64 of the MD5), checked as S3 does:
        a part that arrived damaged is refused and not kept.
        """
        folder = self._upload_dir(upload_id)
        if not (folder / "meta.json").is_file():
            raise NotFoundError(f"upload {upload_id} not found")
        if not 1 <= part_number <= 10000:
            raise InvalidInputError("partNumber", "must be 1..10000")
        expected = None
        if content_md5 is not None:
            try:
                expected = base64.b64decode(content_md5, validate=True).hex()
            except (binascii.Error, ValueError):
                raise InvalidInputError("Content-MD5", "is not base64") from None
            if len(expected) != 32:
                raise InvalidInputError("Content-MD5", "is not a base64 MD5 digest")
        path = folder / f"part-{part_number:05d}"
        staged = folder / f".staged-{part_number:05d}-{secrets.token_hex(4)}"
        etag = _atomic_write(staged, chunks)
        if expected is not None and etag != expected:
            staged.unlink(missing_ok=True)
            raise InvalidInputError("Content-MD5", "the part's MD5 does not match (BadDigest)")
        os.replace(staged, path)
        _atomic_write(folder / f"part-{part_number:05d}.etag", [etag.encode()])
        return etag

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        folder = self._upload_dir(upload_id)
        meta = folder / "meta.json"
        if not meta.is_file() or json.loads(meta.read_text())["key"] != key:
            raise NotFoundError(f"upload {upload_id} not found")
        parts = []
        for etag_file in sorted(folder.glob("part-*.etag")):
            number = int(etag_file.name[5:10])
            parts.append(UploadedPart(part_number=number, etag=etag_file.read_text().strip()))
        return parts

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        folder = self._upload_dir(upload_id)
        meta = folder / "meta.json"
        if not meta.is_file() or json.loads(meta.read_text())["key"] != key:
            raise NotFoundError(f"upload {upload_id} not found")
        numbers = [p.part_number for p in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise InvalidInputError("parts", "must list each part once, in ascending order")
        files = []
        for part in parts:
            path = folder / f"part-{part.part_number:05d}"
            if not path.is_file():
                raise InvalidInputError("parts", f"part {part.part_number} was never uploaded")
            md5 = hashlib.md5()
            with path.open("rb") as fh:
                while chunk := fh.read(8 * 1024 * 1024):
                    md5.update(chunk)
            if md5.hexdigest() != part.etag.strip('"'):
                raise InvalidInputError("parts", f"part {part.part_number}: ETag does not match")
            files.append(path)

        def chunks() -> Iterator[bytes]:
            for path in files:
                with path.open("rb") as fh:
                    while chunk := fh.read(8 * 1024 * 1024):
                        yield chunk

        _atomic_write(self.path(key), chunks())
        shutil.rmtree(folder, ignore_errors=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    def list_multipart(self, prefix: str) -> list[MultipartUpload]:
        found = []
        for folder in sorted(self.uploads.iterdir()):
            meta = folder / "meta.json"
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                # a folder without readable meta (a crash mid-create): as old as its mtime
                info = {"key": "", "created": folder.stat().st_mtime}
            if str(info["key"]).startswith(prefix) and folder.name.isalnum():
                found.append(
                    MultipartUpload(
                        key=info["key"], upload_id=folder.name, initiated=float(info["created"])
                    )
                )
        return found

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                size += len(chunk)
                yield chunk

        _atomic_write(self.path(key), counted())
        return size
