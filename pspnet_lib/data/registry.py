"""One record per dataset: the registration and the metadata in one place.

A dataset class is registered with the :func:`register_dataset` decorator in its own module
(mmsegmentation's ``@DATASETS.register_module()`` pattern: the decorated class is the
registration)::

    @register_dataset("ade20k", splits=("training", "validation"), info=ADE20K_INFO)
    class ADE20KDataset(SegmentationDataset): ...

The record carries the ``--dataset`` key, other accepted names, the usual (train, val) splits, the
zoo metadata (:class:`DatasetInfo`: zoo key, class names, palette, label convention) and the
preparer of the official downloads. Every name-keyed table is a read-only view derived from the
records: :data:`DATASETS` (key -> class), :data:`DEFAULT_SPLITS`, :data:`ZOO_DATASETS` (zoo key
-> key), :data:`DATASET_INFO` (zoo key -> :class:`DatasetInfo`), :data:`PREPARERS` and
:data:`DATASET_ALIASES`; ``build_dataset``, ``pspnet train/eval --dataset``, ``pspnet prepare``
and the zoo read them, so a dataset registered later (in a user's module) is seen by all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DATASETS",
    "DATASET_ALIASES",
    "DATASET_INFO",
    "DEFAULT_SPLITS",
    "PREPARERS",
    "ZOO_DATASETS",
    "DatasetInfo",
    "DatasetRecord",
    "dataset_record",
    "get_dataset_info",
    "register_dataset",
    "unregister_dataset",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model's outputs mean for one dataset.

    Attributes:
        name: short key used in zoo names (``"ade20k"``).
        title: human-readable name.
        classes: class names, index = model output channel.
        palette: one RGB colour per class.
        ignore_index: label value that is not scored.
        reduce_zero_label: annotation value 0 is ignored and model class ``k`` is annotation ``k + 1``.
        homepage: where the dataset is described.
        label_convention: one sentence on how annotation files map to model classes.
    """

    name: str
    title: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    reduce_zero_label: bool
    homepage: str
    label_convention: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetRecord:
    """Everything the library knows about one dataset, by its ``--dataset`` key.

    Attributes:
        key: the ``--dataset`` / :func:`~pspnet_lib.data.build_dataset` name (``"voc"``).
        dataset_class: the class that reads it (``dataset_class(root, split, transforms=...)``).
        splits: the usual ``(train, val)`` split names.
        aliases: other names accepted for it (the zoo key is accepted too).
        info: the zoo metadata (zoo key ``info.name``, class names, palette), or None for a
            dataset without released weights (``folder``).
        prepare: ``prepare(src, dst, **options) -> {"written": n, "skipped": m}``, which turns the
            official downloads into the layout ``dataset_class`` reads (``pspnet prepare KEY``);
            its keyword-only parameters are the preparation's options.
        prepared_with: the key of the dataset whose preparation also serves this one
            (``pascal-context-59`` is prepared by ``pspnet prepare pascal-context``).
    """

    key: str
    dataset_class: type
    splits: tuple[str, str]
    aliases: tuple[str, ...] = ()
    info: DatasetInfo | None = None
    prepare: Callable[..., dict[str, int]] | None = None
    prepared_with: str | None = None

    @property
    def zoo_key(self) -> str | None:
        """The dataset key of the zoo (``Weights.meta["dataset"]``), None without released weights."""
        return self.info.name if self.info is not None else None

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that selects this dataset: the key, the aliases and the zoo key."""
        names = (self.key, *self.aliases, *([self.zoo_key] if self.zoo_key else []))
        return tuple(dict.fromkeys(names))


#: The records, by key, in registration order.
_RECORDS: dict[str, DatasetRecord] = {}

C = TypeVar("C", bound=type)
V = TypeVar("V")


def register_dataset(
    key: str,
    *,
    splits: tuple[str, str],
    aliases: tuple[str, ...] = (),
    info: DatasetInfo | None = None,
    prepare: Callable[..., dict[str, int]] | None = None,
    prepared_with: str | None = None,
) -> Callable[[C], C]:
    """Class decorator: register the decorated dataset class under ``key`` (see :class:`DatasetRecord`
    for the arguments). Returns the class unchanged, with its record as ``cls.record``.

    Raises ``ValueError`` when ``key``, an alias or the zoo key already names another dataset
    (:func:`unregister_dataset` first to replace one).
    """

    def decorate(cls: C) -> C:
        record = DatasetRecord(key, cls, tuple(splits), tuple(aliases), info, prepare, prepared_with)  # type: ignore[arg-type]
        taken = {name: r.key for r in _RECORDS.values() for name in r.names if r.key != key}
        clashes = [name for name in record.names if name in taken]
        if clashes or (key in _RECORDS and _RECORDS[key].dataset_class is not cls):
            names = clashes or [key]
            raise ValueError(
                f"dataset name(s) {names} already registered (by {taken.get(names[0], key)}); "
                "unregister_dataset(key) first, or choose another name"
            )
        _RECORDS[key] = record
        cls.record = record  # type: ignore[attr-defined]
        return cls

    return decorate


def unregister_dataset(key: str) -> DatasetRecord:
    """Remove the dataset ``key`` (a user's toy dataset, a test's); returns its record."""
    try:
        return _RECORDS.pop(key)
    except KeyError:
        raise ValueError(f"no dataset {key!r} is registered; registered: {', '.join(_RECORDS)}") from None


def dataset_record(name: str) -> DatasetRecord:
    """The record of a dataset key, alias or zoo key (case-insensitive); ``ValueError`` naming the
    known datasets otherwise."""
    wanted = name.strip().lower()
    for record in _RECORDS.values():
        if wanted in record.names:
            return record
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(_RECORDS)}")


class _View(Mapping[str, V], Generic[V]):
    """A read-only mapping derived from the records (always current)."""

    def __init__(self, items: Callable[[], dict[str, V]]) -> None:
        self._items = items

    def __getitem__(self, name: str) -> V:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


_ALL = _RECORDS.values
#: ``--dataset`` key -> dataset class.
DATASETS: Mapping[str, type] = _View(lambda: {r.key: r.dataset_class for r in _ALL()})
#: ``--dataset`` key -> the usual (train, val) split names.
DEFAULT_SPLITS: Mapping[str, tuple[str, str]] = _View(lambda: {r.key: r.splits for r in _ALL()})
#: Zoo dataset key (``Weights.meta["dataset"]``) -> the ``--dataset`` key that scores it.
ZOO_DATASETS: Mapping[str, str] = _View(lambda: {r.info.name: r.key for r in _ALL() if r.info})
#: Zoo dataset key -> its :class:`DatasetInfo` (class names, palette, label convention).
DATASET_INFO: Mapping[str, DatasetInfo] = _View(lambda: {r.info.name: r.info for r in _ALL() if r.info})
#: ``pspnet prepare`` names -> preparation functions.
PREPARERS: Mapping[str, Callable[..., dict[str, int]]] = _View(lambda: {r.key: r.prepare for r in _ALL() if r.prepare})
#: Other names of a dataset (aliases, zoo keys such as ``voc12aug``) -> its ``--dataset`` key.
DATASET_ALIASES: Mapping[str, str] = _View(lambda: {n: r.key for r in _ALL() for n in r.names if n != r.key})


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a zoo dataset key (see :data:`DATASET_INFO`)."""
    try:
        return DATASET_INFO[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_INFO)}") from None
