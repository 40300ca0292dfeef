"""Helpers shared by the data-set tests: no real cache, home or network in any of them."""
import socket

from fastmlp import datasets


def closed_port():
    """A local port nothing listens on (connections to it are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def isolate(tmp_path, monkeypatch):
    """Cache and home under tmp_path, $FASTMLP_DATA unset, every mirror on a closed local port."""
    dead = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASTMLP_MIRROR", dead)
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": (dead,), "fashion-mnist": (dead,)})
    return dead
