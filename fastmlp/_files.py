"""Atomic file writes: a temporary file in the destination's directory, renamed into place only
when complete, so a crash or Ctrl-C never leaves a half-written model, checkpoint or data file."""
import os
import tempfile
from pathlib import Path


def atomic_write(dest, write):
    """Call write(path_of_a_temporary_file), then give it the usual permissions (mkstemp makes
    0600 files) and rename it to dest. The temporary file is removed if anything fails."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_savez(dest, **arrays):
    """np.savez (uncompressed) to dest, atomically."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(dest, write)
