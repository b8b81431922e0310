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
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import (it is process-wide,
    # so flipping it later could race with other threads creating files).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK


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

    The temporary name is `.<name>.<pid>-<random>.tmp<suffix>`: if the process is killed
    (SIGKILL, power loss) it stays behind, and `remove_stale_temps(path)` recognises it as
    ours and removes it once that process is gone.
    """
    if mode is not None and ("w" not in mode or "+" in mode):
        raise ValueError(f"atomic_write opens a fresh file: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}-", suffix=f".tmp{target.suffix}", dir=target.parent
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
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise



_DIR_MODE = 0o777 & ~_UMASK


def make_temp_dir(target: PathLike, kind: str = "partial") -> Path:
    """A fresh folder `.<name>.<kind>-<pid>-<random>` beside `target`, with normal
    permissions (0o777 minus the umask, not `mkdtemp`'s 0o700), to build `target` in and
    rename over it when complete. `remove_stale_temps(target)` removes it if this process
    dies before it is renamed."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))
    os.chmod(tmp, _DIR_MODE)
    return tmp


def replace_dir(tmp: PathLike, target: PathLike) -> None:
    """Rename the finished folder `tmp` to `target`, replacing an empty or earlier `target` as a
    whole: the old one is set aside first and put back if the rename fails, then removed."""
    tmp, target = Path(tmp), Path(target)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(tmp, target)
        return
    old = make_temp_dir(target, "old")
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# What follows `.<name>.` in the temporary names s3rt writes: with the writer's pid
# (`<pid>-<random>.tmp<ext>`, `partial-<pid>-<random>`, `old-<pid>-<random>`), and the
# pid-less names of s3rt 0.x (`<random8>.tmp<ext>`, `partial-<random8>`).
_WITH_PID = re.compile(r"^(?:(partial|old)-)?(\d+)-[a-z0-9_]{8}(?:\.tmp(?:\.[^.]+)?)?$")
_LEGACY = re.compile(r"^(?:partial-[a-z0-9_]{8}|[a-z0-9_]{8}\.tmp(?:\.[^.]+)?)$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def remove_stale_temps(target: PathLike, *, legacy_age_s: float = 3600.0) -> list[Path]:
    """Remove the temporary files and folders that s3rt left beside `target` when it was
    killed while writing it (see `atomic_write` and `make_temp_dir`); returns what was removed.

    Only names of s3rt's own pattern are touched, and only when the process that made them
    is gone (names without a pid, from older versions: when untouched for `legacy_age_s`).
    A previous result set aside by an interrupted replace (`.<name>.old-<pid>-...`) is put
    back as `target` when `target` is missing, instead of being removed.
    """
    target = Path(target)
    parent = target.parent
    prefix = f".{target.name}."
    removed: list[Path] = []
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        rest = p.name[len(prefix):]
        m = _WITH_PID.match(rest)
        if m:
            if _process_alive(int(m.group(2))):
                continue
            if m.group(1) == "old" and not os.path.lexists(target) and p.is_dir():
                with contextlib.suppress(OSError):
                    os.replace(p, target)  # a replace killed between its two renames
                    continue
        elif _LEGACY.match(rest):
            try:
                if now - p.lstat().st_mtime < legacy_age_s:
                    continue
            except OSError:
                continue
        else:
            continue
        try:
            if stat.S_ISDIR(p.lstat().st_mode):
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
