"""What makes a cache what it is (its dataset, root, preparation options, faces), and the rule that keeps it: a
cache is never replaced by one of other options (:class:`CacheConflict`), and a preparation without faces
keeps a face cache's faces (:func:`keep_options`).
"""

from __future__ import annotations

import dataclasses

from gbvnet.config import PrepareConfig
from gbvnet.data.cache import Manifest
from gbvnet.data.records import DataError


class CacheConflict(DataError):
    """A cache prepared with other options than a preparation asks for: it is kept, the preparation refused."""


FACE_OPTIONS = ("frames", "face_size")  # the PrepareConfig fields that only face frames depend on


def _options(dataset: str, root: str, cfg: PrepareConfig, face: bool) -> dict:
    """What makes a cache what it is: its dataset, root, preparation config and whether it has faces (the face
    frames' options only where it has them)."""
    options = {"dataset": dataset, "root": root, "face": face,
               **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}}
    return options if face else {k: v for k, v in options.items() if k not in FACE_OPTIONS}


def keep_options(old: Manifest, cache: str, dataset: str, root: str, cfg: PrepareConfig,
                  face: bool) -> tuple[PrepareConfig, bool]:
    """The options to bring the existing cache ``old`` up to date with: those asked for, where they are the
    cache's. A preparation without faces (faces not needed) takes the cache's face options, so a face cache is
    kept with its faces. Any other difference is a :class:`CacheConflict` naming both option sets."""
    if not face:
        cfg, face = dataclasses.replace(cfg, frames=old.config.frames, face_size=old.config.face_size), old.face
    held, asked = _options(old.dataset, old.root, old.config, old.face), _options(dataset, root, cfg, face)
    differ = [k for k in {**held, **asked} if held.get(k) != asked.get(k)]
    if differ:
        def shown(options: dict) -> str:
            return ", ".join(f"{k}={options[k]}" for k in differ if k in options)

        raise CacheConflict(cache, f"prepared with {shown(held)}; this command asks {shown(asked)}: the cache is "
                                   "kept; use it as prepared (--cache without --root), prepare into another "
                                   "--cache, or add --rebuild to replace it")
    return cfg, face

