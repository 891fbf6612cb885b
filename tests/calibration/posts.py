"""Loader of the SYNTHETIC social-post fixture ``tests/data/social_posts.jsonl.gz``.

THE POSTS ARE SYNTHETIC: generated from templates by ``tests/data/make_social_posts.py``
(seeded, deterministic; see its docstring for how). No real post was recorded - the project has
no Reddit source and the tests run offline. The fixture covers six of the bundled stocks
(`POST_TICKERS`) from 2005 to 2012 and exists to run the social-sentiment agent end to end with
the real stock bars (`tests.calibration.stock_bars`); results on it say nothing about real
social media. Post volume and tone depend only on closes known before each post's time stamp,
so no edge about future returns is planted.

`merge_posts_first` builds the single time-ordered stream a replay of both would publish: at
equal time stamps the posts come before the bars (a post stamped at the close belongs to that
bar).
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from contracts import Bar, SocialPost
from tests.calibration import _require, merge_first

POSTS = Path(__file__).resolve().parents[1] / "data" / "social_posts.jsonl.gz"
POST_TICKERS = ("AAPL", "AMD", "BAC", "GE", "MSFT", "XOM")
"""The tickers the synthetic posts are about."""
POSTS_START, POSTS_END = date(2005, 1, 3), date(2012, 12, 31)
"""The trading days the posts were generated for (the first ones are stamped the evening
before `POSTS_START`)."""


@functools.cache
def _all_posts() -> tuple[SocialPost, ...]:
    _require(POSTS)
    with gzip.open(POSTS, "rt", encoding="utf-8") as fh:
        return tuple(SocialPost.model_validate_json(line) for line in fh if line.strip())


def social_posts(start: date | None = None, end: date | None = None) -> list[SocialPost]:
    """The synthetic posts whose UTC date of ``ts_event`` is in [start, end] (both optional),
    in time order."""
    return [
        p
        for p in _all_posts()
        if (start is None or p.ts_event.date() >= start)
        and (end is None or p.ts_event.date() <= end)
    ]


def merge_posts_first(bars: Iterable[Bar], posts: Iterable[SocialPost]) -> list[Bar | SocialPost]:
    """One stream ordered by time; at equal times the posts come before the bars."""
    return merge_first(bars, posts)
