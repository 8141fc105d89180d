"""Where downloaded and extracted datasets live, and how they get there safely.

Archives are never extracted next to themselves (the folder holding them may
be read-only or shared) but into a cache folder (``$FRACBNN_CACHE``, default
``~/.cache/fracbnn``). Extraction goes to a temporary folder that is renamed
into place only when complete, so an interrupted run or two processes
extracting at once never leave a half-filled folder that looks finished.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from ..errors import FracBNNError

COMPLETE_MARKER = ".fracbnn-complete"


def cache_dir() -> Path:
    """The folder for downloads and extracted archives ($FRACBNN_CACHE or ~/.cache/fracbnn)."""
    env = os.environ.get("FRACBNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fracbnn"


def dataset_root_default() -> Path | None:
    """The data location used when none is given: $FRACBNN_DATA if set, else None (use the cache)."""
    env = os.environ.get("FRACBNN_DATA")
    return Path(env).expanduser() if env else None


def archive_key(archive: Path) -> str:
    """A short id of one archive file (path, size, mtime), naming its extraction folder.

    A changed or different archive gets a fresh extraction instead of silently
    reusing the contents of another one.
    """
    st = archive.stat()
    text = f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def extract_archive(archive: Path, top_folder: str, dest_parent: Path) -> Path:
    """Extract ``top_folder`` from a tar archive into ``dest_parent/top_folder`` once.

    Returns the extracted folder. If it already exists and is marked complete,
    nothing is read. Only members inside ``top_folder`` are extracted, with
    tarfile's "data" filter (no absolute paths, links out of the tree, devices).
    """
    final = dest_parent / top_folder
    if (final / COMPLETE_MARKER).is_file():
        return final
    dest_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{top_folder}-", dir=dest_parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = [m for m in tf.getmembers()
                           if m.name == top_folder or m.name.startswith(top_folder + "/")]
                if not members:
                    raise FracBNNError(f"archive {archive} has no folder {top_folder}/ inside; "
                                       "is it the right dataset archive?")
                tf.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            detail = " ".join(str(e).split())  # tarfile lists one reason per compression on separate lines
            raise FracBNNError(f"cannot extract {archive}: not a tar archive, or truncated or corrupt ({detail}); "
                               "download it again") from e
        except OSError as e:
            if not archive.is_file():
                raise FracBNNError(f"archive {archive} does not exist or is not a file") from e
            raise FracBNNError(f"cannot extract {archive} into {dest_parent} ({e}); check free space and "
                               "permissions, or set FRACBNN_CACHE to another folder") from e
        (tmp / top_folder / COMPLETE_MARKER).write_text(f"extracted from {archive}\n")
        try:
            os.replace(tmp / top_folder, final)
        except OSError:
            # another process finished first; its copy is as good as ours
            if not (final / COMPLETE_MARKER).is_file():
                if final.exists():  # a stale, unmarked leftover: replace it
                    shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp / top_folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, *, what: str, hint: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (via a .part file) and verify its md5; return ``dest``.

    An existing ``dest`` with the right checksum is reused. Any network
    failure becomes a FracBNNError carrying ``hint`` (how to use local data).
    """
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        from tqdm import tqdm

        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {what}") as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        part.unlink(missing_ok=True)
        raise FracBNNError(f"cannot download {what} from {url} ({getattr(e, 'reason', e)}); "
                           f"offline? {hint}") from e
    except OSError as e:  # local trouble: disk full, no permission on the cache
        part.unlink(missing_ok=True)
        raise FracBNNError(f"cannot write the download to {part} ({e}); set FRACBNN_CACHE to a writable "
                           f"folder with space, or {hint}") from e
    got = md5sum(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise FracBNNError(f"downloaded {what} has md5 {got}, expected {md5} (corrupted download); "
                           f"try again or {hint}")
    os.replace(part, dest)
    return dest
