"""The formats wing of ``hub/``: reading checkpoint files safely and converting their layouts.

``serialization.py`` is the one reader and writer (``read_checkpoint``, ``read_safetensors``,
``CheckpointError``): a ``.pth`` is read by ``checkpoint_reader.py`` from its archive
(``checkpoint_archive.py``), its pickle followed without running code (``pickle_scan.py``,
``pickle_standins.py``) and the loaded value bounded (``pickle_tree.py``); ``converters.py`` maps
other projects' layouts to this library's, and ``mmseg_config.py`` reads the settings of an
mmsegmentation checkpoint's config text. Nothing here builds a model.
"""
