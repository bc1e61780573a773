"""The embedded archive: Storage + Query/Retrieve SCP with its index in SQLite.

::

    from aiodimse.archive import Archive, ArchiveServer

    async with ArchiveServer("/srv/archive", ae_title="QRSCP", port=11112,
                             destinations={"VIEWER": ("10.0.0.5", 104)}) as server:
        ...  # C-STORE in, C-FIND / C-GET / C-MOVE out; server.archive is the Archive

Modules: :mod:`.scp` (the handler and server), :mod:`.index` (the SQLite index),
:mod:`.matching` (PS3.4 C.2.2.2 matching rules as SQL).
"""

from __future__ import annotations

from .scp import Archive, ArchiveServer

__all__ = ["Archive", "ArchiveServer"]
