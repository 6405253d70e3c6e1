"""Small public-domain sample photos shipped with the package (see assets/README.md)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sample_images", "ASSETS_DIR"]

ASSETS_DIR = Path(__file__).resolve().parent

#: File names in a stable order: a person, an animal, an outdoor scene.
_SAMPLES = ("astronaut.jpg", "chelsea.jpg", "rocket.jpg")


def sample_images() -> list[Path]:
    """Paths of the bundled sample photos (astronaut, cat, rocket launch), in a fixed order.

    Example::

        from pspnet_lib import sample_images
        predictions = model.predict(sample_images())
    """
    paths = [ASSETS_DIR / name for name in _SAMPLES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the sample photos {missing} are missing from {ASSETS_DIR}; the installation is incomplete, "
            "reinstall pspnet-lib (package data pspnet_lib/assets/*)"
        )
    return paths
