"""Predict to files: folders, globs and path lists in, masks and a manifest out; sharded, resumable.

    from pspnet_lib import load_pretrained
    from pspnet_lib.inference.batch import predict_files
    summary = predict_files(load_pretrained("pspnet_r50-d8_ade20k"), ["photos/"], "masks/", recursive=True,
                            skip_existing=True, num_workers=4, batch_size=8)
    summary.line()   # "segmented 1200 of 1200 image(s) into masks; manifest: masks/manifest.jsonl"

The one workflow behind ``pspnet predict``. In two steps, :func:`plan_predictions` (list the
inputs, name the outputs, take this process's shard, check everything; nothing is loaded or
written) and :meth:`PredictionPlan.run` (the model over the inputs to run), so that a bad
argument fails before the weights are loaded. See docs/scale.md.

* Outputs keep each input's relative path (:mod:`~pspnet_lib.inference.inputs`); every file is
  written under a temporary name and renamed, after its manifest record (:mod:`.jobs`), so a
  present output is complete and recorded.
* ``skip_existing``: inputs whose outputs all exist are not run again; their earlier ``done``
  records are kept, and an input without one is recorded ``skipped``. Temporary files of this
  shard's outputs left by a killed run are removed (never trusted).
* A failing input (unreadable, truncated, empty, wrong channel count, vanished, a failed forward
  pass or write) is recorded ``failed`` with its one-line reason and the run goes on, unless
  ``fail_fast``; :attr:`PredictSummary.failed` says which.
* ``shard``: this process's share (``Shard.parse("3/8")``); under ``torchrun`` each rank also
  takes its share (``RANK``/``WORLD_SIZE``), within ``shard`` when both are given.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._files import check_outputs_spare_inputs, ensure_dir, local_files, sibling_folder, temporary_target
from .._progress import progress_bar
from ..core.inference_protocol import resize_keyword
from ..core.pretrained_cfg import PretrainedCfg
from .inputs import InputFile, Shard, input_folders, list_inputs, shard_from_environment
from .jobs import InputRunner, PictureRunner, RunContext
from .manifest import ManifestWriter, manifest_path, read_manifest
from .pipeline import iter_predictions
from .predict import model_num_classes, resolve_protocol
from .raster_runner import tiled_route
from .rasters import TILED_PIXELS
from .recorder import PredictSummary, Recorder

__all__ = ["PredictSummary", "PredictionPlan", "default_device", "plan_predictions", "predict_files"]

logger = logging.getLogger(__name__)

#: A hook choosing the runner of an input (None: the default picture runner).
Route = Callable[[InputFile], "InputRunner | None"]


class _Folders:
    """One listing per output folder: which names exist, and which temporaries aim at which name.
    Paths are strings: a plan over a million inputs makes no Path objects per output."""

    def __init__(self) -> None:
        self._names: dict[str, tuple[set[str], dict[str, list[str]]]] = {}

    def _listing(self, folder: str) -> tuple[set[str], dict[str, list[str]]]:
        if folder not in self._names:
            names: set[str] = set()
            temporaries: dict[str, list[str]] = {}
            try:
                with os.scandir(folder or ".") as entries:
                    for entry in entries:
                        target = temporary_target(entry.name)
                        if target is not None:
                            temporaries.setdefault(target, []).append(entry.name)
                        elif entry.is_file():
                            names.add(entry.name)
            except (FileNotFoundError, NotADirectoryError):
                pass
            self._names[folder] = (names, temporaries)
        return self._names[folder]

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        return name in self._listing(folder)[0]

    def temporaries(self, path: str) -> list[str]:
        folder, name = os.path.split(path)
        return [os.path.join(folder, t) for t in self._listing(folder)[1].get(name, [])]


@dataclass
class PredictionPlan:
    """The checked work of one process: :func:`plan_predictions` makes it, :meth:`run` does it."""

    out: Path
    shard: Shard | None
    manifest: Path
    jobs: list[tuple[InputFile, InputRunner]]
    total: int
    confidence: str | None
    keep: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    stale: list[str]

    @property
    def sources(self) -> list[str]:
        """The paths this process will read (e.g. to calibrate an int8 model on)."""
        return [item.path for item, _ in self.jobs]

    def run(
        self,
        model: nn.Module | None,
        *,
        mode: str | None = None,
        resize: int | Sequence[int] | bool | None = None,
        crop: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        batch_size: int = 1,
        num_workers: int = 2,
        write_threads: int = 2,
        fail_fast: bool = False,
        amp_dtype: torch.dtype | None = None,
        progress: bool | None = None,
        size: int | Sequence[int] | bool | None = None,
    ) -> PredictSummary:
        """Segment the planned inputs with ``model``; see :func:`predict_files` for the arguments.

        ``model`` may be None when there is nothing to run (:attr:`jobs` empty: every output was
        there), so that a finished shard does not load the weights again.

        Raises ``ValueError`` for an invalid protocol before any file is read, and ``OSError``
        when the manifest cannot be written (every other failure is an input's, recorded).
        """
        resize = resize_keyword(resize, size, where="run")
        start = time.perf_counter()
        summary = PredictSummary(self.out, self.manifest, self.shard, self.total)
        summary.already_done, summary.skipped = len(self.keep), len(self.skipped)
        context = None
        if self.jobs:  # a bad protocol fails here, before anything is read or written
            if model is None:
                raise ValueError(f"{len(self.jobs)} input(s) remain to be segmented: pass the model")
            protocol = resolve_protocol(
                model, mode=mode, resize=resize, crop=crop, stride=stride, scales=scales, flip=flip
            )
            num_classes = model_num_classes(model)
            if self.confidence == "entropy" and num_classes is None:
                raise ValueError(
                    "the model does not say its number of classes (model.config.num_classes), needed to scale entropy maps"
                )
            channels = PretrainedCfg.of(model).in_channels
            context = RunContext(protocol, channels, num_classes or 0, self.confidence, amp_dtype)
        for path in self.stale:  # temporaries of this process's outputs, left by a killed run
            Path(path).unlink(missing_ok=True)
        with ManifestWriter(self.manifest, keep=self.keep + self.skipped) as manifest:
            if model is not None and context is not None:
                recorder = Recorder(self.out, manifest, context, summary, fail_fast)
                with progress_bar(total=len(self.jobs), unit="image", desc="pspnet predict", progress=progress) as bar:
                    for item, runner in self.jobs:
                        if not runner.batched and not summary.stopped:
                            recorder.unbatched(model, item, runner)
                            bar.update(1)
                    batched = [(item, runner) for item, runner in self.jobs if runner.batched]
                    if batched and not summary.stopped:
                        outcomes = iter_predictions(
                            model,
                            [item.path for item, _ in batched],
                            protocol=context.protocol,
                            channels=context.in_channels,
                            batch_size=batch_size,
                            num_workers=num_workers,
                            confidence=self.confidence,
                            amp_dtype=amp_dtype,
                        )
                        recorder.batched(outcomes, batched, write_threads, bar)
        summary.seconds = time.perf_counter() - start
        return summary


def plan_predictions(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    recursive: bool = False,
    files_from: str | os.PathLike | None = None,
    overlay: bool = False,
    alpha: float = 0.5,
    confidence: str | None = None,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: Shard | str | None = None,
    route: Route | None = None,
    tiled: bool | None = None,
    tiled_pixels: int = TILED_PIXELS,
    tiled_options: Mapping[str, Any] | None = None,
    refuse_tiled: Sequence[str] = (),
    protect: Iterable[str | os.PathLike] = (),
) -> PredictionPlan:
    """List, name, shard and check the work of :func:`predict_files` without loading or writing anything
    (except creating ``out``). ``protect``: more files no output may replace (e.g. the weights).
    ``tiled``, ``tiled_pixels``, ``tiled_options``, ``refuse_tiled``: which inputs are segmented by
    tiles, and how (:func:`~pspnet_lib.inference.raster_runner.tiled_route`; ignored with ``route``);
    ``refuse_tiled`` names the options given that tiled inference cannot apply (``overlay`` among them).

    Raises ``ValueError``/``FileExistsError``/``FileNotFoundError`` (one line each) for: no inputs,
    an input that does not exist, two inputs that would share an output name, ``out`` equal to or
    inside an input folder, an output that is an input, existing outputs without
    ``skip_existing``/``overwrite``, or both of those.
    """
    if skip_existing and overwrite:
        raise ValueError("--skip-existing keeps existing outputs and --overwrite replaces them; pass one of them")
    out = Path(out)
    runner = PictureRunner(overlay=overlay, alpha=alpha, confidence=confidence)
    files = list_inputs(inputs, recursive=recursive, files_from=files_from)
    if not files:
        raise ValueError("no image files to segment among the inputs")
    outer = Shard.parse(shard) if isinstance(shard, str) else shard
    ranks = shard_from_environment()
    effective = ranks.within(outer) if ranks is not None else outer
    mine = effective.select(files) if effective is not None else files
    if route is None:
        route = tiled_route(
            tiled=tiled,
            max_pixels=tiled_pixels,
            confidence=runner.confidence,
            refuse=refuse_tiled,
            **(tiled_options or {}),
        )
    runners = [(item, route(item) or runner) for item in mine]
    distinct = {id(r): r for _, r in runners} | {id(runner): runner}
    _check_names(files, {suffix for r in distinct.values() for suffix in r.suffixes().values()})
    manifest = manifest_path(out, effective)

    folders = _Folders()
    earlier: dict[str, dict[str, Any]] = {}
    if skip_existing and manifest.is_file():
        earlier = {r["input"]: r for r in read_manifest(manifest)}
    jobs: list[tuple[InputFile, InputRunner]] = []
    keep: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    present: list[str] = []
    stale = folders.temporaries(str(manifest))
    root = str(out)
    for item, chosen in runners:
        names = chosen.outputs(item.key)
        paths = [os.path.join(root, name) for name in names.values()]
        stale += [t for p in paths for t in folders.temporaries(p)]
        have = [p for p in paths if folders.exists(p)]
        if skip_existing and len(have) == len(paths):
            record = earlier.get(item.path)
            if record is not None and record.get("status") == "done" and record.get("outputs") == names:
                keep.append(record)
            else:
                skipped.append({"input": item.path, "status": "skipped", "outputs": names})
            continue
        present += have
        jobs.append((item, chosen))
    # Never replace a picture being segmented (or the weights), whatever the flags. Only a file that
    # exists can be an input (or a link to one), so a fresh run skips a million realpath/stat calls.
    replaced = present + ([str(manifest)] if folders.exists(str(manifest)) else [])
    if replaced:
        check_outputs_spare_inputs(
            replaced,
            [item.path for item in files] + [Path(p) for p in protect],
            advice=f"choose another --out folder, e.g. --out {sibling_folder(out, 'masks')}",
        )
    _check_out_folder(out, inputs)
    if present and not overwrite and not skip_existing:
        shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
        raise FileExistsError(
            f"{len(present)} output file(s) already exist ({shown}); pass --skip-existing to keep them and "
            "segment the rest, --overwrite to replace them, or choose another --out folder"
        )
    ensure_dir(out)  # a file in the way fails here, before the model is loaded
    return PredictionPlan(out, effective, manifest, jobs, len(mine), runner.confidence, keep, skipped, stale)


def _check_out_folder(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output folder equal to or inside an input folder: the next run on that folder would
    read the masks as pictures."""
    resolved = Path(os.path.realpath(out))
    for folder in input_folders(inputs):
        real = Path(os.path.realpath(folder))
        if resolved == real or real in resolved.parents:
            where = "the input folder" if resolved == real else "inside the input folder"
            raise ValueError(
                f"refusing --out {out}: it is {where} {folder}, and the masks would mix with the pictures; "
                f"choose another --out folder, e.g. --out {sibling_folder(folder, 'masks')}"
            )


def _check_names(files: Sequence[InputFile], suffixes: set[str]) -> None:
    """Refuse two inputs whose outputs would share a name: ``a`` (overlay ``a_overlay.png``) and an
    input called ``a_overlay`` (mask ``a_overlay.png``). Keys are unique, so ``k1 + s1 == k2 + s2``
    needs ``s1`` to end with ``s2`` and ``k2 == k1 + s1[:-len(s2)]``: one dictionary look-up per
    input and pair of suffixes, not a set of every output name."""
    pairs = [(s1, s1[: -len(s2)]) for s1 in suffixes for s2 in suffixes if s1 != s2 and s1.endswith(s2)]
    if not pairs:
        return
    keys = {item.key: item.path for item in files}
    for item in files:
        for suffix, extra in pairs:
            other = keys.get(item.key + extra)
            if other is not None:
                raise ValueError(
                    f"{item.path} and {other} would both write {item.key + suffix}; rename one or segment them "
                    "in separate runs with different --out folders"
                )


def default_device(requested: str | torch.device | None = None) -> str:
    """The device of this process: ``requested``, with a bare ``"cuda"`` (or None when a GPU is
    available) meaning ``cuda:LOCAL_RANK`` under torchrun, so that ranks do not share GPU 0; None
    without a GPU is ``"cpu"``."""
    if requested is not None and str(requested) != "cuda":
        return str(requested)
    if requested is None and not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK", "")
    return f"cuda:{int(local_rank)}" if local_rank.isdigit() else "cuda"


def predict_files(
    model: nn.Module | str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    recursive: bool = False,
    files_from: str | os.PathLike | None = None,
    overlay: bool = False,
    alpha: float = 0.5,
    confidence: str | None = None,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: Shard | str | None = None,
    route: Route | None = None,
    tiled: bool | None = None,
    tiled_pixels: int = TILED_PIXELS,
    tiled_options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    **run_options: Any,
) -> PredictSummary:
    """Segment files into ``out``: one mask PNG per input (and overlay, confidence picture), a manifest.

    Args:
        model: a model, or anything :func:`~pspnet_lib.load_pretrained` takes (loaded after the checks).
        inputs: files, folders and glob patterns (:func:`~pspnet_lib.inference.inputs.list_inputs`).
        out: the output folder; ``<out>/<key>.png`` per input, the manifest beside them.
        recursive, files_from: also search sub-folders; also read a text file listing paths.
        overlay, alpha: also write ``<key>_overlay.png`` with this mask opacity.
        confidence: also write ``<key>_<kind>.png``, the 8-bit confidence picture, and its mean
            into the manifest (``"maxprob"``, ``"margin"``, ``"entropy"``).
        skip_existing: resume: inputs whose outputs all exist are not run again.
        overwrite: replace existing outputs (default: refuse before any work).
        shard: ``"I/N"`` or a :class:`Shard`: this process's share (combined with ``torchrun``'s ranks).
        route: ``route(input) -> InputRunner | None`` chooses another runner for an input.
        tiled: which inputs :func:`~pspnet_lib.inference.rasters.predict_raster` segments window
            by window (their outputs, GeoTIFFs for rasters, are in the same folder and manifest):
            None (default): georeferenced rasters and rasters over ``tiled_pixels`` pixels
            (8,192 x 8,192); True: every input; False: none.
        tiled_options: ``predict_raster``'s ``bands``, ``nodata``, ``crop``, ``stride``, ``blend``,
            ``batch_size``, ``probs``, ``polygons``, ``max_image_pixels`` for the tiled inputs.
        device: where to load ``model`` when it is given as weights.
        run_options: ``mode``, ``resize``, ``crop``, ``stride``, ``scales``, ``flip`` (the
            protocol, as :func:`~pspnet_lib.predict`), ``batch_size`` (1), ``num_workers``
            (decoding processes, 2), ``write_threads`` (2), ``fail_fast``, ``amp_dtype``, ``progress``.

    Returns a :class:`PredictSummary` (``.ok`` is False when an input failed).
    """
    plan = plan_predictions(
        inputs,
        out,
        recursive=recursive,
        files_from=files_from,
        overlay=overlay,
        alpha=alpha,
        confidence=confidence,
        skip_existing=skip_existing,
        overwrite=overwrite,
        shard=shard,
        route=route,
        tiled=tiled,
        tiled_pixels=tiled_pixels,
        tiled_options=tiled_options,
        refuse_tiled=[
            name
            for name, value, default in (
                ("overlay=True", overlay, False),
                ("flip", run_options.get("flip", False), False),
                ("scales", tuple(run_options.get("scales", (1.0,))), (1.0,)),
                ("mode='whole'", run_options.get("mode") == "whole", False),
            )
            if value != default
        ],
        protect=[] if isinstance(model, nn.Module) else local_files(model),
    )
    if not isinstance(model, nn.Module):
        from ..hub.loading import load_pretrained

        model = load_pretrained(model, device=default_device(device))
    elif device is not None:
        model.to(device)
    return plan.run(model, **run_options)
