"""Social-sentiment agent: the tone and the volume of posts about a stock since its last bar.

Why: message boards and social media carry two things a price series does not - what posters
say (tone) and how many of them say it (attention). Antweiler and Frank (2004) find that
message volume predicts volatility and, weakly, returns; Da, Engelberg and Gao (2011) find that
abnormal attention precedes higher returns that later reverse. Whether either predicts returns
in a given feed is an empirical question, so the slopes are estimated walk-forward, never
assumed.

Posts (`on_post`). Each `SocialPost` is scored once with VADER (Hutto and Gilbert 2014; the
``vaderSentiment`` package's lexicon and rules): the *compound* score in [-1, 1] of its title
and text (the first ``max_chars`` characters, so one pasted report cannot cost milliseconds).
Its tickers are ``post.symbols`` when given, else the ``$TICKER`` cashtags in title and text
(upper-cased); a post naming no ticker, or more than ``max_tickers_per_post`` (a list, not an
opinion), is skipped and counted (`skips`). The score is queued per ticker with the post's
``ts_event``.

Bars. At bar t of a symbol (close P, daily simple return r), the queued posts of that symbol
with ``ts_event <= t`` - those received since its previous bar, late ones included - are taken
out; posts stamped after t stay queued for a later bar (never used before their time). With
n = their number and c_i their compound scores:

    s(t)       = mean(c_i), 0 when n = 0                      (sentiment; no posts: no opinion)
    a(t)       = log(1 + n)
    m(t), d(t) = EW mean and std of a over the symbol's *earlier* bars (half-life 63 bars)
    A(t)       = clip((a(t) - m(t)) / d(t), +-4)              (attention spike; no posts: low)
    x(t)       = (s(t), A(t))                                  (two features)
    vol(t)     = EW std of r (half-life 42 bars, floored at 0.3 %)
    R(t)       = P(t + 1) / P(t) - 1                          (the next day's return)
    R / vol = alpha + b1 s + b2 A + e                         (EW least squares, walk-forward)

so mu = vol * (alpha + b1 s + b2 A) and sigma = vol * RMS of the model's out-of-sample errors,
over the 1d horizon, from :class:`engine.calibration.ForwardReturnCalibrator` (pooled across
symbols; see there for n_eff and confidence, a Wald statistic on both slopes). Two features,
not one, because tone and attention are distinct hypotheses in the literature and neither
subsumes the other (a flood of neutral posts is attention without tone). Horizon 1d: the
literature's effects are strongest on the next day, and posts are a daily-refreshed input.

No posts, missing data. A bar with no posts since the previous one has s = 0 and a = 0 (a low
attention spike): a defined value, because silence is information about attention. A symbol
that has never been posted about has no spread in a (d = 0) and therefore no indicator and no
signal - the agent speaks only where there is social coverage. The attention baseline needs
``min_attention_obs`` bars before A exists. Bad closes and gaps are handled by
`engine.calibrated`; a gap restarts the symbol's attention baseline too. Posts queued for a
ticker that never gets a bar are capped at ``max_pending_posts`` per ticker (oldest dropped,
counted), so memory stays bounded.

Weekends: the posts of Saturday and Sunday count toward Monday's bar, so Mondays tend to show
attention above the baseline; the slope absorbs the average effect (a per-weekday baseline would
be a refinement).

Cost: VADER is the expensive part (tens of microseconds per short post, in `on_post`); per bar
the work is O(posts since the previous bar) to drain the queue (each post is handled once) plus
O(1) EW updates - O(1) amortized per event.

References: Hutto and Gilbert (2014), "VADER: A Parsimonious Rule-based Model for Sentiment
Analysis of Social Media Text", Proceedings of the Eighth International AAAI Conference on
Weblogs and Social Media (ICWSM-14); Antweiler and Frank (2004), "Is All That Talk Just Noise?
The Information Content of Internet Stock Message Boards", Journal of Finance 59(3), 1259-1294;
Da, Engelberg and Gao (2011), "In Search of Attention", Journal of Finance 66(5), 1461-1499.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field, model_validator
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from contracts import Bar, Horizon, SocialPost
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.calibration import Estimate, EwMoments
from engine.features import FeatureField, FeatureSet, FieldType

SOCIAL_SENTIMENT_FEATURES = FeatureSet(
    name="social_sentiment",
    version=1,
    description="Social-sentiment agent's indicators, per symbol and bar",
    fields=(
        FeatureField("sentiment", FieldType.FLOAT, description="mean VADER compound, 0 if none"),
        FeatureField("attention", FieldType.FLOAT, description="log(1 + posts) vs EW, in stds"),
        FeatureField("posts", FieldType.INT, description="posts since the previous bar"),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""

NO_TICKER = "post without a ticker"
TOO_MANY_TICKERS = "post names too many tickers"
QUEUE_FULL = "too many queued posts for a ticker: oldest dropped"

# A cashtag: "$" + a letter, then up to 9 letters, digits or dots (BRK.B), not preceded by a
# word character or another "$" ("US$100" and "$$" are not tickers), not running on beyond 10.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9.]{0,9})(?![A-Za-z0-9])")


@functools.cache
def _vader() -> Any:
    """The VADER analyzer (reads its lexicon files once per process, at an agent's start)."""
    return SentimentIntensityAnalyzer()


def post_tickers(post: SocialPost) -> tuple[str, ...]:
    """The post's tickers, upper-cased and de-duplicated in order: ``post.symbols`` when
    given, else the ``$TICKER`` cashtags of its title and text."""
    if post.symbols:
        names = [s.upper() for s in post.symbols]
    else:
        names = [m.rstrip(".").upper() for m in _CASHTAG.findall(f"{post.title}\n{post.text}")]
    return tuple(dict.fromkeys(n for n in names if n))


class SocialSentimentParams(CalibratedAgentParams):
    attention_halflife: float = Field(
        default=63.0, gt=0, description="Half-life of the attention baseline (mean, std), bars"
    )
    min_attention_obs: int = Field(
        default=20, ge=2, description="Bars seen before the attention spike is defined"
    )
    clip: float = Field(default=4.0, gt=0, description="The attention spike is clipped to +-clip")
    max_chars: int = Field(
        default=2_000, ge=1, description="Characters of a post (title + text) VADER scores"
    )
    max_tickers_per_post: int = Field(
        default=5, ge=1, description="A post naming more tickers is a list and is skipped"
    )
    max_pending_posts: int = Field(
        default=10_000, ge=1, description="Queued posts per ticker before the oldest are dropped"
    )

    @model_validator(mode="after")
    def _warmup_within_memory(self) -> SocialSentimentParams:
        # The baseline's EW weights hold about (1 + lam) / (1 - lam) ~ 2.885 x half-life bars;
        # a warm-up asking for more than it can remember means one of the two was given in the
        # wrong unit.
        lam = 0.5 ** (1.0 / self.attention_halflife)
        window = (1.0 + lam) / (1.0 - lam)
        if self.min_attention_obs > window:
            raise ValueError(
                f"min_attention_obs ({self.min_attention_obs}) exceeds the attention baseline's "
                f"effective window ({window:.1f} bars for attention_halflife "
                f"{self.attention_halflife})"
            )
        return self


class _Attention:
    """One symbol's attention baseline and the indicator of its bar being handled."""

    __slots__ = ("baseline", "current")

    def __init__(self, halflife: float) -> None:
        self.baseline = EwMoments(halflife)
        self.current: tuple[float, float, int] | None = None
        """(sentiment, attention spike, posts) of this bar; None while not defined."""


class SocialSentimentAgent(CalibratedAgent[SocialSentimentParams]):
    """Consumes posts and bars; one 1d signal per bar of a symbol with social coverage."""

    horizon = Horizon.D1
    feature_set = SOCIAL_SENTIMENT_FEATURES
    n_features = 2

    async def setup(self) -> None:
        self._analyzer = _vader()
        self._queues: dict[str, deque[tuple[datetime, float]]] = {}
        self._posts_now = 0

    def new_extra(self, symbol: str) -> _Attention:
        return _Attention(self.params.attention_halflife)

    # -- posts ---------------------------------------------------------------------------------

    def score(self, post: SocialPost) -> float:
        """VADER's compound score of the post's title and text, in [-1, 1]."""
        text = f"{post.title}\n{post.text}" if post.title and post.text else post.title or post.text
        result = self._analyzer.polarity_scores(text[: self.params.max_chars])
        value = float(result["compound"])
        return value if math.isfinite(value) else 0.0

    async def on_post(self, post: SocialPost) -> None:
        p = self.params
        tickers = post_tickers(post)
        if not tickers:
            self.skip(post.source, NO_TICKER, post_id=post.post_id)
            return
        if len(tickers) > p.max_tickers_per_post:
            self.skip(post.source, TOO_MANY_TICKERS, post_id=post.post_id, tickers=len(tickers))
            return
        entry = (post.ts_event, self.score(post))
        for ticker in tickers:
            queue = self._queues.get(ticker)
            if queue is None:
                queue = self._queues[ticker] = deque()
            if queue and entry[0] < queue[-1][0]:
                # out of time order (a late delivery): keep the queue sorted so the drain at a
                # bar can stop at the first post stamped after it
                bisect.insort(queue, entry, key=lambda e: e[0])
            else:
                queue.append(entry)
            if len(queue) > p.max_pending_posts:
                queue.popleft()
                self.skip(ticker, QUEUE_FULL)

    # -- bars ----------------------------------------------------------------------------------

    async def on_bar(self, bar: Bar) -> None:
        state = self.state_of(bar)
        if state is None:
            return  # the posts stay queued for the symbol's next valid bar
        n, total = self._drain(bar.symbol.upper(), bar.ts_event)
        extra: _Attention = state.extra
        base = extra.baseline
        a = math.log1p(n)
        spread = base.std
        # measured against the baseline of *earlier* bars, so a burst does not dilute itself
        if base.count >= self.params.min_attention_obs and spread > 0.0:
            c = self.params.clip
            spike = max(-c, min(c, (a - base.mean) / spread))
            extra.current = (total / n if n else 0.0, spike, n)
        else:
            extra.current = None
        base.update(a)
        self._posts_now = n
        await self.calibrate(bar, state)

    def _drain(self, ticker: str, ts: datetime) -> tuple[int, float]:
        """Take the ticker's queued posts stamped at or before `ts`: (count, sum of scores)."""
        queue = self._queues.get(ticker)
        n = 0
        total = 0.0
        while queue and queue[0][0] <= ts:
            total += queue.popleft()[1]
            n += 1
        return n, total

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> tuple[float, float] | None:
        current: tuple[float, float, int] | None = state.extra.current
        if current is None:
            return None
        return (current[0], current[1])

    def published(self, x: float | tuple[float, ...], vol: float) -> Mapping[str, float] | None:
        if not isinstance(x, tuple):
            return None
        return {"sentiment": x[0], "attention": x[1], "posts": self._posts_now, "vol_daily": vol}

    def signal_features(
        self, x: float | tuple[float, ...], vol: float, est: Estimate
    ) -> dict[str, float]:
        assert isinstance(x, tuple)
        return {
            "sentiment": x[0],
            "attention": x[1],
            "posts": float(self._posts_now),
            "vol_daily": vol,
            "n_eff": est.n_eff,
            "beta_sentiment": est.betas[0],
            "beta_attention": est.betas[1],
            "regime_weight": est.regime_weight,
        }
