"""tools/prepare_default_data.py reads the photos out of Debian packages without dpkg."""
import io
import os
import sys
import tarfile

import pytest
from PIL import Image

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import prepare_default_data as prep  # noqa: E402


def fake_deb(path, files: dict[str, bytes]) -> None:
    """An ar archive with debian-binary, control.tar.xz and data.tar.xz, as dpkg-deb writes it."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b"x" * 7), ("data.tar.xz", data.getvalue())]
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, content in members:
            handle.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode())
            handle.write(content + (b"\n" if len(content) % 2 else b""))


def jpeg(size, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_photos_come_out_of_the_packages_scaled_with_their_licences(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "DEBIAN_PHOTOS", {
        "plasma-workspace-wallpapers": {"usr/share/wallpapers/Path/contents/images/2560x1600.jpg": "LGPL-3 (someone)"},
        "mate-backgrounds": {"usr/share/backgrounds/mate/nature/Wood.jpg": "GPL-2+ (someone else)"},
    })
    fake_deb(tmp_path / "plasma-workspace-wallpapers_5.27_all.deb",
             {"usr/share/wallpapers/Path/contents/images/2560x1600.jpg": jpeg((2560, 1600), (200, 10, 10)),
              "usr/share/doc/other": b"ignored"})
    fake_deb(tmp_path / "mate-backgrounds_1.26_all.deb", {"usr/share/backgrounds/mate/nature/Wood.jpg": jpeg((800, 600), (0, 90, 0))})
    photos = prep.read_debian_photos(str(tmp_path))
    assert set(photos) == {"plasma_Path.png", "mate_Wood.png"}
    image, source, licence = photos["plasma_Path.png"]
    assert image.size == (1024, 640) and licence == "LGPL-3 (someone)" and "2560x1600.jpg" in source
    assert photos["mate_Wood.png"][0].size == (800, 600)  # smaller photos are kept as they are
    assert abs(photos["mate_Wood.png"][0].getpixel((400, 300))[1] - 90) < 4


def test_a_missing_package_or_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "DEBIAN_PHOTOS", {"mate-backgrounds": {"usr/share/backgrounds/mate/nature/Wood.jpg": "GPL-2+"}})
    with pytest.raises(FileNotFoundError, match="apt-get download mate-backgrounds"):
        prep.read_debian_photos(str(tmp_path))
    fake_deb(tmp_path / "mate-backgrounds_1.26_all.deb", {"usr/share/other.jpg": jpeg((8, 8), (0, 0, 0))})
    with pytest.raises(FileNotFoundError, match="has no usr/share/backgrounds/mate/nature/Wood.jpg"):
        prep.read_debian_photos(str(tmp_path))
    (tmp_path / "bad.deb").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a Debian package"):
        prep.deb_members(str(tmp_path / "bad.deb"), set())
