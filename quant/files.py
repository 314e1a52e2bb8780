"""Writing products so that a failed run never leaves a half-written one.

Every writer of an artifact, a report, an image, a memory image or a bitstream goes through
here: the content is written to a temporary name in the same folder and renamed over the
target (``os.replace``, atomic on one file system). A run that fails part-way leaves the
previous good file, or none.

    from quant import files
    files.write_text(path, text)
    files.write_json(path, obj)
    files.write_bytes(path, data)
    with files.atomic(path) as tmp:      # any writer that takes a path
        np.savez(tmp, ...)
    with files.staged_dir(out) as tmp_dir:   # a set of files, moved in when all are written
        save(artifact, tmp_dir)

Also the content hashes the build caches compare (:func:`sha256`).
"""
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic", "write_text", "write_bytes", "write_json", "staged_dir", "sha256"]


def _temp_name(path: Path) -> Path:
    # Keep the suffix: some writers (numpy, imageio, ecppack) choose the format from it.
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextmanager
def atomic(path):
    """Yield a temporary path beside ``path``; when the block ends without an exception the
    temporary file replaces ``path``, otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer made no file")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path, data: bytes) -> Path:
    with atomic(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path, obj, indent=1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


@contextmanager
def staged_dir(out, last=("manifest.json",)):
    """Yield an empty temporary folder beside ``out``; when the block succeeds every file in
    it is moved into ``out`` (each by ``os.replace``; the names in ``last`` move last, so a
    reader that starts from them never sees a half-updated set). On failure the temporary
    folder is removed and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in tmp.iterdir())
        for name in sorted(names, key=lambda n: n in last):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


PROJECT = Path(__file__).resolve().parent.parent


def project_relative(path):
    """``path`` relative to the project when it lies inside it, else as given: what committed
    reports record, so that they carry no machine's folders."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(PROJECT))
    except ValueError:
        return str(path)
