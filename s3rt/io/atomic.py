"""Atomic file writes: write to a temporary name in the target folder, then `os.replace`.

Every writer in s3rt goes through `atomic_write`, so a crash, a full disk or Ctrl-C never
leaves a half-written mask, CSV, video or engine under the final name: the target either
keeps its old content or gets the complete new one. The temporary file lives in the same
folder (same filesystem, so the rename is atomic) and keeps the target's extension, so
format-sniffing writers (PIL, `cv2.imwrite`, `cv2.VideoWriter`) pick the right format.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import (it is process-wide,
    # so flipping it later could race with other threads creating files).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_write(
    path: PathLike,
    mode: str | None = None,
    *,
    encoding: str | None = None,
    newline: str | None = None,
    fsync: bool = True,
) -> Iterator[Union[Path, IO]]:
    """Context manager for writing `path` atomically.

    - `mode=None` (default): yields the temporary `Path` (same folder, same extension);
      write it yourself by name (`img.save(tmp)`, `cv2.VideoWriter(str(tmp), ...)`).
    - `mode="w"`, `"wb"`, ...: yields an open file object on the temporary file.

    On normal exit the temporary file is renamed over `path` (parent folders are created
    first); on an exception it is deleted and `path` is left untouched. The final file gets
    the usual permissions (0o666 minus the umask), not `mkstemp`'s 0o600.
    """
    if mode is not None and ("w" not in mode or "+" in mode):
        raise ValueError(f"atomic_write opens a fresh file: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        if mode is None:
            os.close(fd)
            yield tmp
        else:
            binary = "b" in mode
            with open(
                fd,
                mode,
                encoding=None if binary else (encoding or "utf-8"),
                newline=None if binary else newline,
                closefd=True,
            ) as f:
                yield f
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
        if not tmp.exists():
            raise FileNotFoundError(f"the writer removed its temporary file {tmp} before {target} was written")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise

