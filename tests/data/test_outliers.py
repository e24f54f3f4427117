"""Outlier sources: class-per-folder directories and torchvision's CIFAR-100."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

from hiertune.data.outliers import load_outlier_folder


def test_folder_outliers_keep_class_structure(tiny_outliers, cache_root):
    o = load_outlier_folder(tiny_outliers, 64, cache_root)
    assert o.classes == ["class0", "class1", "class2", "class3"]
    assert len(o.names) == 12 and o.images.shape == (12, 64, 64, 3)
    assert np.bincount(o.class_index).tolist() == [3, 3, 3, 3]
    assert o.names[0] == "class0/0.jpg" and o.summary()["classes"] == 4


@pytest.mark.slow
def test_cifar100_offline_is_one_clear_line(small_data, tmp_path):
    """A real download attempt through a proxy on a closed loopback port: the traffic never
    leaves the machine and fails the way an offline machine does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HIERTUNE_CACHE_DIR": str(tmp_path / "cache"),
           "https_proxy": f"http://127.0.0.1:{closed_port}", "http_proxy": f"http://127.0.0.1:{closed_port}"}
    proc = subprocess.run([sys.executable, "-m", "hiertune", "data", "inspect", str(small_data), "--outliers", "cifar100"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Downloading")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"hiertune: error: cifar100: cannot download CIFAR-100 into {tmp_path / 'cache' / 'cifar100'}")
    assert "offline, pass --outliers DIR with a class-per-folder image directory" in lines[0]
    assert not list((tmp_path / "cache").glob("*.parquet"))
