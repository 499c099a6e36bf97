"""Session fixtures of the extractor tests: generated clips, loaded extractors, one extraction."""

from __future__ import annotations

import pytest
from feature_media import make_media, missing_feature_packages

@pytest.fixture(scope="session")
def media(tmp_path_factory):
    if missing_feature_packages():
        pytest.skip(f"needs the 'features' extra; missing: {', '.join(missing_feature_packages())}")
    root = tmp_path_factory.mktemp("clips")
    return make_media(root)


@pytest.fixture(scope="session")
def opencv_settings():
    from mmib.features.settings import ExtractorSettings

    return ExtractorSettings(vision_backend="opencv", text_max_len=16, audio_max_len=40, vision_max_len=20)


@pytest.fixture(scope="session")
def extractors(opencv_settings):
    """Loaded once per session: the MiniLM text model takes seconds to load."""
    if missing_feature_packages():
        pytest.skip(f"needs the 'features' extra; missing: {', '.join(missing_feature_packages())}")
    from mmib.features.extract import Extractors

    ex = Extractors(opencv_settings)
    yield ex
    ex.close()


@pytest.fixture(scope="session")
def extracted(media, extractors, opencv_settings, tmp_path_factory):
    """Results of every clip of :func:`media` (jobs=1, with a cache folder)."""
    from mmib.features.clips import read_labels
    from mmib.features.extract import extract_clips

    clips, columns = read_labels(media, media.parent)
    cache = tmp_path_factory.mktemp("cache")
    results = extract_clips(clips, opencv_settings, cache_dir=cache, progress=False, extractors=extractors)
    return {"clips": clips, "columns": columns, "results": {r.id: r for r in results}, "cache": cache,
            "order": [r.id for r in results]}
