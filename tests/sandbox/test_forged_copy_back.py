"""A forged copy-back archive: what comes back from a jail is extracted into the workspace alone.

Where the jail runs in a user namespace of the host's own user (trajforge not started as root), jailed code can open
the copy-back pipe of the jail's first process through /proc and write an archive of its own (sandbox/inside.py says
so). Python 3.11.7's tarfile `data` filter passes a symlink chain whose expansion is longer than PATH_MAX
(CVE-2025-4517: `os.path.realpath` stops resolving there), so a member written through it landed outside the workspace.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading

from sandbox.disk import WorkspaceCopy


def _add(archive: tarfile.TarFile, name: str, *, content: bytes | None = None, **fields) -> None:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    if content is None:
        archive.addfile(info)
    else:
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))


def path_max_escape(destination: str) -> bytes:
    """An archive whose member `escape/ESCAPED` resolves to the folder holding `destination` (cpython's own test of
    CVE-2025-4517, test_realpath_limit_attack)."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf(os.path.dirname(destination), "PC_PATH_MAX") - len(destination) - 1) // (len(steps) + 1))
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as archive:
        path = ""
        for step in steps:
            _add(archive, os.path.join(path, component), type=tarfile.DIRTYPE, mode=0o755)
            _add(archive, os.path.join(path, step), type=tarfile.SYMTYPE, linkname=component)
            path = os.path.join(path, component)
        too_long = os.path.join(*steps, "l" * 254)
        _add(archive, too_long, type=tarfile.SYMTYPE, linkname=os.path.join(*[".."] * len(steps)))
        _add(archive, "escape", type=tarfile.SYMTYPE, linkname=os.path.join(too_long, ".."))
        _add(archive, "escape/ESCAPED", content=b"written by jailed code\n", mode=0o644)
        _add(archive, "kept.txt", content=b"an ordinary file\n", mode=0o644)
        _add(archive, "outside", type=tarfile.SYMTYPE, linkname="/etc/passwd")  # jailed code may leave such a link
        _add(archive, "sub", type=tarfile.DIRTYPE, mode=0o755)
        _add(archive, "sub/up", type=tarfile.SYMTYPE, linkname="../kept.txt")
    return data.getvalue()


def _come_back(box, workspace, forged: bytes):
    copy = WorkspaceCopy(box.settings, workspace, None)
    writer = threading.Thread(target=lambda: (os.write(copy.write_fd, b"0 changed -\n" + forged), os.close(copy.write_fd)))
    copy._thread.start()  # `started()` closes the write end: here the forger holds it
    writer.start()
    writer.join()
    return copy.finish()


def test_a_forged_archive_writes_nothing_outside_the_workspace(box, tmp_path):
    workspace = box.prepare_workspace("forged-copy-back", {"app.py": "print(1)\n"})
    try:
        around = workspace.parent
        before = set(os.listdir(around))
        staging_name = f".incoming-{workspace.name}-{'x' * 8}"  # the folder the archive is extracted into, as jailed code can tell
        back = _come_back(box, workspace, path_max_escape(str(around / staging_name)))
        assert not (around / "ESCAPED").exists()
        assert set(os.listdir(around)) == before
        assert back.status == 0 and not back.full
        # what an honest archive holds still comes back: files, and links as jailed code made them
        assert (workspace / "kept.txt").read_text() == "an ordinary file\n"
        assert os.readlink(workspace / "outside") == "/etc/passwd"
        assert os.readlink(workspace / "sub" / "up") == "../kept.txt"
    finally:
        box.cleanup(workspace)
