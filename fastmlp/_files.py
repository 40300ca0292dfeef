"""Output files: checked before any work, written atomically, never a file that is not the output.

Every file fastmlp writes (models, checkpoints, metrics, plots, downloads, caches) goes through
:func:`check_output` before the work starts and :func:`atomic_write` when it is written:

* the path may name a regular file or nothing; a device, FIFO, socket or directory is refused, so
  that ``--save /dev/null`` can never replace the system's /dev/null;
* a symbolic link is followed and its target is replaced (the link stays a link);
* a file without write permission is refused, also for root (who could write it anyway): the
  mode bits are the user's intent;
* a replaced file keeps its permission bits (and, for root, its owner);
* the bytes go to a temporary ``.NAME.*.part`` file next to the target, renamed over it only when
  complete, so a crash, a full disk or Ctrl-C never leaves a half-written file; temporaries of
  killed writers (no live process holds their lock) are removed by the next write;
* an error names the path and says what was expected (:class:`fastmlp.errors.OutputError`).

:func:`check_distinct` compares a command's outputs with its inputs and with each other by the file
they resolve to, so that no output can replace an input.
"""
import os
import stat
import tempfile
import time
from pathlib import Path

from .errors import OutputError, PathClashError

try:
    import fcntl
except ImportError:  # not on Windows: no stale-temporary cleanup there
    fcntl = None

#: A ``.part`` file is removed only if no process holds its lock and it is older than this many
#: seconds (a writer takes the lock just after creating the file).
STALE_SECONDS = 10.0

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode):
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def resolve(path):
    """``path`` with ``~`` expanded and every symbolic link followed (also a dangling one)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _label(what, path):
    return f"{what} {os.fspath(path)}" if what else os.fspath(path)


def _check_target(real, name, via=""):
    """The stat of the regular, writable file at ``real`` (None if nothing is there); else OutputError."""
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OutputError(f"cannot write {name}: {e.strerror or e}; choose another path") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"cannot write {name}: it is {_kind(st.st_mode)}{via}, expected a regular "
                          f"file or a new path; choose another path")
    # Mode bits, not only os.access: root may write anything, but a read-only file says "keep me".
    if not st.st_mode & 0o222 or not os.access(real, os.W_OK):
        raise OutputError(f"cannot write {name}: the file{via} is read-only (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); make it writable (chmod u+w) or "
                          f"choose another path")
    return st


def check_output(path, what=""):
    """Fail now, before any work, unless ``path`` can be replaced by a new regular file.

    Returns ``(real_path, st)``: the path with symbolic links followed, and its ``os.stat`` result
    (None when no file is there yet). ``what`` (e.g. ``"--save"``) prefixes the path in messages.
    Raises :class:`OutputError` with one line otherwise."""
    name = _label(what, path)
    real = resolve(path)
    link = os.fspath(real) != os.path.abspath(os.path.expanduser(os.fspath(path)))
    directory = real.parent
    if not directory.exists():
        raise OutputError(f"cannot write {name}: directory {directory} does not exist; create it "
                          f"first or choose another path")
    if not directory.is_dir():
        raise OutputError(f"cannot write {name}: {directory} is not a directory; choose another path")
    st = _check_target(real, name, f" (the target of the link, {real})" if link else "")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastmlp-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write {name}: {e.strerror or e} in {directory}; choose a writable "
                          f"location") from None
    return real, st


def file_identity(path):
    """What ``path`` resolves to: ``("inode", st_dev, st_ino)`` if it exists, else its resolved path."""
    p = os.path.expanduser(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError:
        return ("path", os.fspath(resolve(p)))
    return ("inode", st.st_dev, st.st_ino)


def check_distinct(outputs, inputs=(), allowed=()):
    """Raise :class:`PathClashError` if an output is the same file as an input or as another output.

    ``outputs``, ``inputs``: sequences of ``(label, path)`` (entries whose path is None are skipped);
    ``allowed``: ``(output_label, input_label)`` pairs that may name the same file (e.g. resuming from
    and saving to one checkpoint). Files are compared by device and inode where they exist, by
    resolved path otherwise, so links and different spellings of one path are caught."""
    seen = []
    for label, path in outputs:
        if path is None:
            continue
        ident = file_identity(path)
        for other_label, other_path, other in seen:
            if other == ident:
                raise PathClashError(f"{label} {os.fspath(path)} and {other_label} {os.fspath(other_path)} "
                                     f"are the same file; give two different paths")
        seen.append((label, path, ident))
    for in_label, in_path in inputs:
        if in_path is None:
            continue
        ident = file_identity(in_path)
        for label, path, out in seen:
            if out == ident and (label, in_label) not in allowed:
                raise PathClashError(f"{label} {os.fspath(path)} would replace the input "
                                     f"{in_label} {os.fspath(in_path)} (the same file); give another "
                                     f"path for {label}")


def remove_stale_parts(real):
    """Delete ``.NAME.*.part`` temporaries of ``real`` left by killed writers: those no live process
    holds locked (a writer holds a lock on its temporary until it is renamed) and older than
    :data:`STALE_SECONDS`."""
    if fcntl is None:
        return
    real = Path(real)
    prefix, now = "." + real.name + ".", time.time()
    try:
        entries = list(os.scandir(real.parent))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".part")):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_SECONDS:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer
            same = os.lstat(entry.path)
            if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def atomic_write(dest, write, what="", make_dirs=True):
    """Call ``write(path_of_a_temporary_file)``, then rename the temporary over ``dest``.

    ``dest`` is checked first (:func:`check_output`): a symbolic link is followed and its target
    replaced; the new file keeps the mode of the file it replaces (the umask's default for a new
    one). The temporary file is removed if anything fails; an ``OSError`` while writing (a full
    disk, a file-size limit) becomes an :class:`OutputError` naming ``dest``. ``make_dirs``: create
    missing parent directories (else a missing directory is an error)."""
    name = _label(what, dest)
    if make_dirs:
        try:
            resolve(dest).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {name}: cannot create its directory: {e.strerror or e}; "
                              f"choose a writable location") from None
    real, st = check_output(dest, what)
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    remove_stale_parts(real)
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix="." + real.name + ".", suffix=".part")
    except OSError as e:
        raise OutputError(f"cannot write {name}: {e.strerror or e}; choose a writable location") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        write(tmp)
        os.chmod(tmp, mode)
        if st is not None and os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError:
                pass
        # The target may have changed while we worked: check it again just before the rename.
        _check_target(real, name)
        os.replace(tmp, real)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {name}: {e.strerror or e}; nothing was written (the "
                              f"previous file, if any, is unchanged)") from None
        raise
    finally:
        os.close(fd)


def atomic_savez(dest, what="", **arrays):
    """np.savez (uncompressed) to dest, atomically."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(dest, write, what)
