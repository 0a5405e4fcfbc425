"""A Hydra plugin that puts rope_lab's pe and scaling dataclass defaults in the ConfigStore before any config loads.

Hydra imports every module under the ``hydra_plugins`` namespace (this folder is on ``sys.path`` whenever
train.py, eval.py or the tests run from the repository) and calls each search-path plugin while it sets up, in
``@hydra.main`` and in the compose API alike, before the primary config is loaded. So configs/pe/*.yaml can extend
``/dataclass_defaults/pe/<name>`` from any entry point without that entry point importing rope_lab first.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class RopeLabDataclassDefaults(SearchPathPlugin):
    """Adds no search path: the hook only runs :func:`rope_lab.pe.registry.store_dataclass_defaults`."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:  # lazy: Hydra scans plugins in every app, rope_lab's or not
            from rope_lab.pe.registry import store_dataclass_defaults
        except ImportError:  # another rope_lab on sys.path (an older checkout) that keeps its defaults in yaml
            return
        store_dataclass_defaults()
