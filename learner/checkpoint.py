"""Atomic checkpoint directories and the driver's resumable state.

Layout under a checkpoint root:

    root/
      latest                  the name of the newest complete checkpoint (written by temp + rename)
      ckpt-00000012/          one complete checkpoint: it gets this name only once fully written
        meta.json             learner version, wall time, learner config (for humans)
        engine/               DeepSpeed's files: weights, optimizer state, ZeRO shards, client state
        driver_state.pkl      the driver's state: step, prompt-sampler position
      .tmp-ckpt-00000013/     a checkpoint being written: never read, replaced by the next save

A crash at any point leaves the previous checkpoint or the new one, never half of one: every
file is fsynced before its directory is renamed into place (os.replace is atomic on POSIX), and
``latest`` moves only after that rename.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

LATEST = "latest"
DRIVER_STATE = "driver_state.pkl"
_NAME = re.compile(r"^ckpt-(\d+)$")


def checkpoint_name(version: int) -> str:
    return f"ckpt-{version:08d}"


def _fsync_dir(path: Path) -> None:
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


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


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
    _fsync_dir(path.parent)


def staging_dir(root: str | Path, name: str) -> Path:
    """An empty directory ``root/.tmp-<name>`` to write checkpoint ``name`` into (a leftover of a
    crashed save is removed). The name is deterministic so that every rank writes to the same one."""
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
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def set_latest(root: str | Path, name: str) -> None:
    write_atomic(Path(root) / LATEST, name.encode())


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (by version)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint named by ``root/latest``; if that file is missing or names nothing (a crash
    between the directory rename and the pointer update), the newest complete one; else None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if _NAME.match(target.name) and target.is_dir():
            return target
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint root (-> its latest checkpoint) or one checkpoint directory -> that directory."""
    path = Path(path)
    if _NAME.match(path.name) and path.is_dir():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no checkpoint under {path}; write one with Learner.save_checkpoint({str(path)!r})")
    return found


def prune_checkpoints(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (never the one ``latest`` names); ``keep=0``
    deletes none. Returns the deleted. The driver calls it after each save (``ServiceConfig.keep_checkpoints``)."""
    if keep < 0:
        raise ValueError(f"prune_checkpoints: keep must be >= 0 (0 keeps all), got {keep}")
    if keep == 0:
        return []
    latest = latest_checkpoint(root)
    doomed = [p for p in list_checkpoints(root)[:-keep] if p != latest]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def save_driver_state(ckpt_dir: str | Path, state: dict) -> Path:
    """Pickle the driver's state (step, sampler position, ...) into
    ``ckpt_dir/driver_state.pkl``, atomically. Pass the staging directory to make it part of one
    checkpoint (``Learner.save_checkpoint(root, driver_state=...)`` does)."""
    if not isinstance(state, dict):
        raise TypeError(f"save_driver_state: state must be a dict, got {type(state).__name__}")
    path = Path(ckpt_dir) / DRIVER_STATE
    write_atomic(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load_driver_state(ckpt_dir: str | Path) -> dict:
    """The dict saved by ``save_driver_state``; ``ckpt_dir`` may be a checkpoint root (-> latest).
    Unpickles: read only checkpoints this project wrote."""
    path = resolve_checkpoint(ckpt_dir) / DRIVER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"no driver state at {path}; save one with save_driver_state(dir, state)")
    with open(path, "rb") as f:
        return pickle.load(f)
