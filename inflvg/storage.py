"""Run storage: one root for checkpoints, the exported policy and the step log, read and written by
whichever process holds the work, on whichever node.

A root is a local folder (a plain path, written with fsync and atomic renames) or any URI that
``pyarrow.fs`` opens: ``s3://bucket/runs``, ``gs://bucket/runs``, ``hdfs://...``, ``file:///mnt/nfs/runs``.
A URI always goes through pyarrow, so ``file://`` exercises the same code as an object store.
Object stores have no rename: a multi-file artefact (a checkpoint) is uploaded whole and then
published by writing one small pointer object, which every store writes atomically.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pyarrow import fs as pafs


def fsync_dir(path: Path) -> None:
    try:  # directories cannot be opened for fsync on every platform (Windows): best effort there
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def is_uri(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


class Storage:
    """A folder in a file system: a local path or a pyarrow URI. Paths below it are '/'-joined
    relative names. Picklable by its ``uri``, so it can be handed to another process."""

    def __init__(self, location: str | Path):
        if is_uri(location):
            self.fs, root = pafs.FileSystem.from_uri(str(location))
            self.uri = str(location).rstrip("/")
        else:
            root = str(Path(location).resolve())
            self.fs, self.uri = pafs.LocalFileSystem(), root
        self.root = root.rstrip("/")
        self.local = not is_uri(location)
        """A plain local path: atomic writes by rename and fsync, checkpoints written in place."""

    def __reduce__(self):
        return Storage, (self.uri,)

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def path(self, *parts: str) -> str:
        """The file system path of ``parts`` under the root."""
        return str(PurePosixPath(self.root, *parts)) if parts else self.root

    def location(self, *parts: str) -> str:
        """What another process opens to reach ``parts``: a local path or a URI."""
        return "/".join([self.uri, *parts])

    def child(self, *parts: str) -> Storage:
        return Storage(self.uri + "/" + "/".join(parts) if not self.local else Path(self.root, *parts))

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def is_dir(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type == pafs.FileType.Directory

    def listdir(self, *parts: str) -> list[str]:
        """Names directly under ``parts`` (files and folders); [] when it does not exist."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(PurePosixPath(info.path).name for info in self.fs.get_file_info(selector))

    def read_bytes(self, *parts: str) -> bytes:
        if not self.exists(*parts):
            raise FileNotFoundError(f"nothing at {self.uri}/{'/'.join(parts)}")
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Replace a file whole: atomically (a reader sees the old bytes or the new)."""
        if self.local:
            write_atomic(self.path(*parts), data)
            return
        self.fs.create_dir(str(PurePosixPath(self.path(*parts)).parent), recursive=True)
        with self.fs.open_output_stream(self.path(*parts)) as f:  # one object: atomic on object stores
            f.write(data)

    def delete_dir(self, *parts: str) -> None:
        if self.is_dir(*parts):
            self.fs.delete_dir(self.path(*parts))

    def upload(self, local_dir: str | Path, *parts: str) -> None:
        """Copy the local folder ``local_dir`` to ``parts`` (created)."""
        self.fs.create_dir(self.path(*parts), recursive=True)
        pafs.copy_files(str(local_dir), self.path(*parts), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def download(self, local_dir: str | Path, *parts: str) -> Path:
        """Copy ``parts`` (a folder) to the local folder ``local_dir`` -> ``local_dir``."""
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(*parts), str(local_dir), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return Path(local_dir)
