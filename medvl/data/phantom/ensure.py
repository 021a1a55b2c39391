"""Phantoms on demand: the one function every job calls to have its phantom folder ready.

A folder is reused when the ``config_hash`` its ``phantom_info.json`` records equals the hash of
the wanted :class:`PhantomConfig` (:func:`phantom_hash`); otherwise it is regenerated. Under
Accelerate only the main process renders; the other ranks wait for it, then reuse the folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from medvl.data.phantom.config import PhantomConfig, phantom_hash
from medvl.data.phantom.generate import (
    INFO_FILE,
    SEG_MANIFEST,
    STUDIES_MANIFEST,
    TRUTH_FILE,
    generate_phantoms,
)

logger = logging.getLogger(__name__)


def recorded_hash(folder: str | Path) -> str | None:
    """The ``config_hash`` of the phantoms in ``folder``; ``None`` when it holds none."""
    info = Path(folder) / INFO_FILE
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text()).get("config_hash")
    except (json.JSONDecodeError, AttributeError):
        return None


def _clear(folder: Path) -> None:
    """Remove what an earlier generation wrote, so no image of it outlives the new manifest.

    The info file goes first: a generation interrupted after this never looks complete.
    """
    (folder / INFO_FILE).unlink(missing_ok=True)
    for name in (STUDIES_MANIFEST, SEG_MANIFEST, TRUTH_FILE):
        (folder / name).unlink(missing_ok=True)
    for name in ("images", "masks"):
        shutil.rmtree(folder / name, ignore_errors=True)


def ensure_phantoms(config: PhantomConfig, folder: str | Path, progress: bool = False) -> Path:
    """Return ``folder``'s studies manifest, generating the phantoms of ``config`` if needed.

    Parameters
    ----------
    config
        The wanted phantoms; ``workers`` only sets how fast they render.
    folder
        Where they live (layout in :mod:`medvl.data.phantom.generate`). A folder generated
        with other byte-changing settings (``n_studies``, ``seed``, ``size``, ``reports``,
        ``label_source``) is cleared and regenerated, never silently reused.
    progress
        Show the generator's progress bar.
    """
    from medvl.data.processes import process_state

    folder = Path(folder)
    wanted = phantom_hash(config)
    state = process_state()
    with state.main_process_first():
        found = recorded_hash(folder)
        if found == wanted:
            logger.info("reusing the phantoms in %s (config hash %s)", folder, wanted)
        elif not state.is_main_process:
            raise RuntimeError(
                f"{folder}: the main process generated phantoms that this process cannot see "
                "(is the folder on a filesystem that every process shares?)"
            )
        else:
            if (folder / INFO_FILE).is_file():
                logger.info("phantoms in %s were made with other settings; regenerating", folder)
                _clear(folder)
            logger.info(
                "generating %d phantom studies (%d px, seed %d) into %s",
                config.n_studies, config.size, config.seed, folder,
            )  # fmt: skip
            generate_phantoms(
                config.n_studies, folder, seed=config.seed, size=config.size,
                workers=config.workers, reports=config.reports,
                label_source=config.label_source, progress=progress,
                transfer_syntax=config.transfer_syntax,
            )  # fmt: skip
    return (folder / STUDIES_MANIFEST).resolve()
