"""Atomic checkpoints in run storage (a local folder or a pyarrow URI) and the driver's state.

Layout under a checkpoint root:

    root/
      latest                  the name of the newest complete checkpoint (replaced whole)
      ckpt-00000012/          one complete checkpoint
        meta.json             learner version, wall time, learner config (for humans)
        engine/               DeepSpeed's files: weights, optimizer state, ZeRO shards, client state
        driver_state.json     the driver's state: step, prompt-sampler position
        manifest.json         sha256 of every file above, checked before anything is loaded
      .tmp-ckpt-00000013/     a checkpoint being written (local roots): never read

In a local root a checkpoint is written beside its final name and renamed into place after every
file is fsynced, and ``latest`` moves after that: a crash leaves the previous checkpoint or the new
one, never half of one. A URI root has no rename: the checkpoint is written to local scratch,
uploaded whole, and ``latest`` (one object, written atomically by every store) publishes it; the
manifest catches a partial upload or a damaged file at load time, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from inflvg.storage import Storage, fsync_dir, is_uri, write_atomic

LATEST = "latest"
DRIVER_STATE = "driver_state.json"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^ckpt-(\d+)$")


def checkpoint_name(version: int) -> str:
    return f"ckpt-{version:08d}"


def _store(root: str | Path | Storage) -> Storage:
    return root if isinstance(root, Storage) else Storage(root)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


def staging_dir(root: str | Path, name: str) -> Path:
    """An empty local directory ``root/.tmp-<name>`` to write checkpoint ``name`` into (a leftover of
    a crashed save is removed). The name is deterministic so that every rank writes to the same one."""
    staging = Path(root) / f".tmp-{name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit_dir(staging: Path, final: Path) -> Path:
    """fsync everything under ``staging``, then rename it to ``final`` in one step. An existing
    ``final`` (a re-save of the same version) is moved aside first and deleted afterwards."""
    _fsync_tree(staging)
    old = final.with_name(f".old-{final.name}")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(ckpt_dir: Path) -> None:
    """Record the sha256 of every file under ``ckpt_dir`` (DeepSpeed's included) in its manifest."""
    files = sorted(p for p in ckpt_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    sums = {p.relative_to(ckpt_dir).as_posix(): _digest(p) for p in files}
    write_atomic(ckpt_dir / MANIFEST, json.dumps(sums, indent=1).encode())


def verify_manifest(ckpt_dir: Path) -> None:
    """Raise ValueError naming the first file that is missing or differs from the manifest."""
    manifest = ckpt_dir / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"checkpoint {ckpt_dir} has no {MANIFEST}: it is incomplete or was not written by Learner.save_checkpoint")
    for rel, digest in json.loads(manifest.read_text()).items():
        path = ckpt_dir / rel
        if not path.is_file():
            raise ValueError(f"checkpoint {ckpt_dir}: {rel} is missing (an interrupted upload?); resume from an earlier checkpoint")
        if _digest(path) != digest:
            raise ValueError(f"checkpoint {ckpt_dir}: {rel} does not match its checksum; the file was damaged or replaced")


def set_latest(root: str | Path | Storage, name: str) -> None:
    _store(root).write_bytes(name.encode(), LATEST)


def _names(store: Storage) -> list[str]:
    """Names of the complete checkpoints, oldest first (by version). Local: renamed into place;
    URI: the manifest arrived (a partial upload is caught by ``verify_manifest`` at load)."""
    found = [(int(m.group(1)), n) for n in store.listdir() if (m := _NAME.match(n)) and store.is_dir(n)]
    return [n for _, n in sorted(found) if store.local or store.exists(n, MANIFEST)]


def list_checkpoints(root: str | Path | Storage) -> list[str]:
    """Locations (paths or URIs) of the complete checkpoints under ``root``, oldest first."""
    store = _store(root)
    return [store.location(n) for n in _names(store)]


def latest_checkpoint(root: str | Path | Storage) -> str | None:
    """The checkpoint named by ``root/latest``; if that is missing or names nothing (a crash
    between the checkpoint and the pointer), the newest complete one; else None."""
    store = _store(root)
    names = _names(store)
    if store.exists(LATEST):
        name = store.read_bytes(LATEST).decode().strip()
        if name in names:
            return store.location(name)
    return store.location(names[-1]) if names else None


def resolve_checkpoint(location: str | Path) -> tuple[Storage, str]:
    """A checkpoint root (-> its latest) or one checkpoint's location -> (its root, its name)."""
    text = str(location).rstrip("/")
    parent, _, last = text.rpartition("/")
    if _NAME.match(last) and (is_uri(text) or Path(text).is_dir()):
        return Storage(parent if is_uri(text) else Path(text).parent), last
    found = latest_checkpoint(location)
    if found is None:
        raise FileNotFoundError(f"no checkpoint under {location}; write one with Learner.save_checkpoint({text!r})")
    return Storage(location), found.rstrip("/").rpartition("/")[2]


def fetch(location: str | Path, scratch: str | Path) -> Path:
    """The checkpoint at ``location`` as a verified local folder: in place for a local root,
    downloaded into ``scratch`` for a URI."""
    store, name = resolve_checkpoint(location)
    local = Path(store.path(name)) if store.local else store.download(Path(scratch) / name, name)
    verify_manifest(local)
    return local


def publish(local_ckpt: Path, root: str | Path | Storage) -> str:
    """Make the committed local checkpoint ``local_ckpt`` the latest of ``root`` (uploading it
    first when ``root`` is a URI) -> its location."""
    store, name = _store(root), local_ckpt.name
    if not store.local:
        store.delete_dir(name)  # a re-save of one version replaces it whole
        store.upload(local_ckpt, name)
    set_latest(store, name)
    return store.location(name)


def prune_checkpoints(root: str | Path | Storage, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest checkpoints (never the one ``latest`` names); ``keep=0``
    deletes none. Returns the deleted. The driver calls it after each save (``ServiceConfig.keep_checkpoints``)."""
    if keep < 0:
        raise ValueError(f"prune_checkpoints: keep must be >= 0 (0 keeps all), got {keep}")
    if keep == 0:
        return []
    store = _store(root)
    latest = latest_checkpoint(store)
    doomed = [n for n in _names(store)[:-keep] if store.location(n) != latest]
    for n in doomed:
        store.delete_dir(n)
    return [store.location(n) for n in doomed]


def save_driver_state(ckpt_dir: str | Path, state: dict) -> Path:
    """Write the driver's state (step, sampler position: JSON values) as ``ckpt_dir/driver_state.json``,
    atomically. Pass the staging directory to make it part of one checkpoint
    (``Learner.save_checkpoint(root, driver_state=...)`` does)."""
    if not isinstance(state, dict):
        raise TypeError(f"save_driver_state: state must be a dict, got {type(state).__name__}")
    path = Path(ckpt_dir) / DRIVER_STATE
    write_atomic(path, json.dumps(state, indent=1).encode())
    return path


def load_driver_state(location: str | Path) -> dict:
    """The dict saved by ``save_driver_state``; ``location`` may be a checkpoint root (-> latest)."""
    store, name = resolve_checkpoint(location)
    if not store.exists(name, DRIVER_STATE):
        raise FileNotFoundError(f"no driver state in {store.location(name)}; save one with save_driver_state(dir, state)")
    return json.loads(store.read_bytes(name, DRIVER_STATE))
