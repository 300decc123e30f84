"""Prepare a dataset download into the window cache (the command, ``python -m gbvnet.prepare``:
:mod:`gbvnet.prepare.cli`).

Per subject: read its trials (the dataset's reader), filter / resample with mne, cut windows inside the
stimulus, sample ``--frames`` frames per window from the time-aligned face video, crop the face (Haar cascade,
see :mod:`gbvnet.data.video`), binarise labels (``rating > --threshold``), and write one Arrow file (see
:mod:`gbvnet.data.cache`). A re-run redoes only subjects whose source files (the set of files, their sizes and
mtimes) or preparation config changed, or whose file is not the size the manifest records (truncated); an
unchanged cache is not touched at all.

A cache is an asset (a face cache of the real DEAP takes hours to prepare): it is never replaced by one of other
options. Preparing an existing cache with another dataset, root or preparation option stops with a one-line
error naming both option sets (:class:`CacheConflict`), before anything is touched; ``--rebuild`` replaces it.
``--no-face`` means "faces not needed": a cache with faces and the same signal options is kept as it is, faces
and all (a bio model needs nothing a face cache lacks), so a bio-only command never rebuilds it bio-only.

Bad input: ``--on-error fail`` (default) stops at the first bad input with a one-line error naming the file and
the problem, leaving the previous cache byte-for-byte intact (files this run wrote are removed; the manifest is
only replaced at the end). ``--on-error skip`` warns, skips the smallest broken unit and lists each skip in the
report and in the manifest's ``skipped`` as a record naming its unit (``subject N trial T``, ``subject N``,
``face videos of subject N``, or a ``file`` that belongs to no subject; see
:func:`gbvnet.data.records.skip_record`). A MAHNOB subject without any rated session is skipped in either mode
(not an error). Video/signal duration mismatches, missing DEAP videos and face-detection fallbacks (per video,
``face_fallback_videos`` where more than 20 % of the sampled frames had no face) are reported, not errors.
``--no-face`` on a new or bio-only cache never opens a video or the DEAP ratings CSV.

``--processes N`` prepares N subjects at a time in worker processes (the platform's default start method); with
fewer subjects to redo than processes, each subject crops its videos in ``N // subjects`` threads.
Ctrl-C (once or more) and SIGTERM stop the workers and remove every file this run wrote (exit code 130).

Each dataset's reader and preparation defaults come from the registry, :mod:`gbvnet.data.registry` (DEAP's
``data_preprocessed_python`` is already band-passed and at 128 Hz, so it is not filtered again; MAHNOB-HCI raw
BDFs are low-passed at 45 Hz and resampled from 256 to 128 Hz), and so do the readers' own options, each a flag
here (AMIGOS: ``--videos short|long|all``, ``--face-names``). The window cache and its manifest
(:class:`gbvnet.data.cache.Manifest`) are :mod:`gbvnet.data.cache`'s.

Code: :mod:`gbvnet.prepare.subject` makes one subject's file (:func:`prepare_subject`: read and cut its trials,
crop the faces, build the table, write it); :mod:`gbvnet.prepare.plan` prepares a dataset
(:func:`prepare_dataset`: plans what to redo, runs the subjects to redo in a pool, commits the manifest, then the
report: :func:`format_report`); :mod:`gbvnet.prepare.pool` holds the worker processes and the signal handling,
:mod:`gbvnet.prepare.options` what makes a cache what it is (:class:`CacheConflict`, :data:`FACE_OPTIONS`), and
:mod:`gbvnet.prepare.cli` the command.
"""

from gbvnet.prepare.options import FACE_OPTIONS, CacheConflict
from gbvnet.prepare.plan import format_report, prepare_dataset
from gbvnet.prepare.subject import SubjectSkipped, config_hash, prepare_subject

__all__ = ["FACE_OPTIONS", "CacheConflict", "SubjectSkipped", "config_hash", "format_report", "prepare_dataset",
           "prepare_subject"]
