"""Generate ``social_posts.jsonl.gz``: a SYNTHETIC, deterministic fixture of social-media posts.

THE POSTS ARE SYNTHETIC. No real post, author or forum was recorded: there is no Reddit source
in the project and no internet access where the tests run. Every post is made up here from
templates, by a seeded ``random.Random`` (no wall clock, no other randomness), so running this
script again writes byte-identical output. The fixture exists to exercise the social-sentiment
agent (`plugins/social_sentiment.py`) end to end on realistic *shapes* of data; any forecasting
result on it says nothing about real social media.

What it contains: posts about six of the bundled 20 stocks (AAPL, AMD, BAC, GE, MSFT, XOM) from
2005 to 2012, source ``synthetic``, as `contracts.SocialPost` JSON (``model_dump(mode="json")``),
one per line, in time order. Short posts are built from templates whose words VADER scores
(great, strong, terrible, worried, ...). Most posts list their ticker in ``symbols``; about a
fifth name it only as a ``$TICKER`` cashtag in the title or text (``symbols`` empty); a few
(~2 %) name no ticker at all and must be skipped by a consumer; a few mention two tickers.

No planted edge. The posts of session i - those stamped in (close of day i-1, close of day i],
i.e. after the previous close (evening, night, weekend) or during day i before its close at
21:00 UTC - depend only on closes up to day i-1, all known before the first of them is stamped:

- post count ~ Poisson(base * (1 + 0.8 |z1| + 0.3 |z5|) * (1 + 0.35 * (calendar days - 1)))
  (attention spikes after big moves; weekends add fewer posts per day),
- each post's tone: neutral with probability 0.35, else bullish with probability
  sigmoid(0.9 z1 + 0.5 z5) (sentiment chases past returns),

where z1 is day i-1's return and z5 the 5-day return to day i-1, both in units of the EW daily
volatility (half-life 21 bars) measured up to day i-1. Nothing about day i's or later returns
enters, so whatever a model finds in these posts about future returns comes from the real
returns' own autocorrelation, not from the generator.

Run from the repository root: ``.venv/bin/python tests/data/make_social_posts.py``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from contracts import SocialPost
from engine.data import bundled_path

OUT = Path(__file__).resolve().parent / "social_posts.jsonl.gz"
SEED = 20050103
SOURCE = "synthetic"
TICKERS = ("AAPL", "AMD", "BAC", "GE", "MSFT", "XOM")
START, END = date(2005, 1, 3), date(2012, 12, 31)
CLOSE = time(21)  # the bars' time stamp (UTC), as in tests.calibration

# posts per trading session of a ticker before the attention multiplier (~2 a session overall)
BASE_RATE = {"AAPL": 1.6, "AMD": 1.0, "BAC": 1.1, "GE": 0.8, "MSFT": 1.1, "XOM": 0.6}
NAMES = {
    "AAPL": "Apple",
    "AMD": "AMD",
    "BAC": "Bank of America",
    "GE": "GE",
    "MSFT": "Microsoft",
    "XOM": "Exxon",
}
CHANNELS = ("stocks", "investing", "StockMarket", "options", "SecurityAnalysis")
VOL_HALFLIFE = 21.0
P_NEUTRAL = 0.35
P_CASHTAG_ONLY = 0.2
P_NO_TICKER = 0.02
P_TWO_TICKERS = 0.03

BULL = (
    "{tag} looks great after today, really strong setup",
    "Love the momentum in {name}. Solid gains and I am confident",
    "{name} earnings should be excellent, happy to hold {tag}",
    "Just added more {tag}. Nice move, feeling good about it",
    "{tag} is a win for long term holders, amazing run",
    "Strong quarter ahead for {name}? I am excited",
    "{name} profit outlook looks good to me, great value at this price",
)
BEAR = (
    "{tag} looks terrible, worried about more losses",
    "{name} is weak here. Bad guidance, I fear a crash",
    "Sold my {tag}, this is ugly and I am nervous",
    "{tag} disappointing again. Horrible price action",
    "Scared of holding {name} into earnings, could be a big loss",
    "{name} will dump further, panic selling everywhere",
    "Another miss from {name}? Bad sign for {tag}",
)
NEUTRAL = (
    "Anyone holding {tag} into next week?",
    "What is the current thesis on {name}?",
    "{tag} options chain question",
    "Thoughts on {name} vs the sector?",
    "{name} announced its dividend date",
    "Where do you track {tag} filings?",
)
NO_TICKER = (
    "What is everyone buying this week?",
    "Market looks great today, love this rally",
    "Worried about the Fed, this market is ugly",
    "Any good books on value investing?",
)


def _stock_closes() -> tuple[list[date], dict[str, list[float | None]]]:
    with gzip.open(bundled_path("us_stocks_20_daily_close.csv.gz"), "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols = {t: header.index(t) for t in TICKERS}
        days: list[date] = []
        closes: dict[str, list[float | None]] = {t: [] for t in TICKERS}
        for rec in reader:
            days.append(date.fromisoformat(rec[0]))
            for t, j in cols.items():
                closes[t].append(float(rec[j]) if rec[j] else None)
    return days, closes


def _risk_units(closes: list[float | None]) -> list[tuple[float, float] | None]:
    """Per day i: (z1, z5) of day i's 1-day and 5-day returns in units of the EW daily vol
    known at day i (returns up to day i); None while not computable."""
    lam = 0.5 ** (1.0 / VOL_HALFLIFE)
    w = var = 0.0
    out: list[tuple[float, float] | None] = []
    for i, c in enumerate(closes):
        prev = closes[i - 1] if i else None
        if c is None or prev is None:
            out.append(None)
            continue
        r = c / prev - 1.0
        w = lam * w + 1.0
        var += (r * r - var) / w
        c5 = closes[i - 5] if i >= 5 else None
        if w < 10.0 or var <= 0.0 or c5 is None:
            out.append(None)
            continue
        vol = math.sqrt(var)
        out.append((r / vol, (c / c5 - 1.0) / (vol * math.sqrt(5.0))))
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: lam stays small (a few posts a session)
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _stamp(rng: random.Random, after: datetime, until: datetime) -> datetime:
    """A time in (after, until], mostly in US waking hours (12:00-04:00 UTC)."""
    span = int((until - after).total_seconds())
    while True:
        ts = after + timedelta(seconds=rng.randint(1, span))
        if not 4 <= ts.hour < 12 or rng.random() < 0.1:
            return ts


def _text(rng: random.Random, ticker: str, tone: str, cashtag_only: bool) -> tuple[str, str]:
    """(title, text) of one post about `ticker`."""
    templates = BULL if tone == "bull" else BEAR if tone == "bear" else NEUTRAL
    body = rng.choice(templates)
    tag = f"${ticker}" if cashtag_only or rng.random() < 0.5 else ticker
    name = NAMES[ticker]
    line = body.format(tag=tag, name=name)
    if cashtag_only and f"${ticker}" not in line:
        line = f"${ticker}: {line}"
    if rng.random() < 0.5:
        return line, ""
    return f"{name} discussion", line


def generate() -> bytes:
    """The fixture's bytes (gzip, mtime 0): the same on every run."""
    rng = random.Random(SEED)
    days, closes = _stock_closes()
    units = {t: _risk_units(closes[t]) for t in TICKERS}
    rows: list[tuple[datetime, int, dict[str, object]]] = []
    n = 0
    for i in range(1, len(days)):
        day = days[i]
        if not START <= day <= END:
            continue
        after = datetime.combine(days[i - 1], CLOSE, tzinfo=UTC)
        until = datetime.combine(day, CLOSE, tzinfo=UTC)
        calendar_days = (day - days[i - 1]).days
        for ticker in TICKERS:
            known = units[ticker][i - 1]  # closes up to day i-1 only
            if known is None or closes[ticker][i] is None:
                continue
            z1, z5 = known
            lam = BASE_RATE[ticker] * (1.0 + 0.8 * abs(z1) + 0.3 * abs(z5))
            lam *= 1.0 + 0.35 * (calendar_days - 1)
            p_bull = 1.0 / (1.0 + math.exp(-(0.9 * z1 + 0.5 * z5)))
            for _ in range(_poisson(rng, lam)):
                n += 1
                u = rng.random()
                tone = "neutral" if u < P_NEUTRAL else "bull" if rng.random() < p_bull else "bear"
                ts = _stamp(rng, after, until)
                kind = rng.random()
                symbols: tuple[str, ...]
                if kind < P_NO_TICKER:
                    title, text = rng.choice(NO_TICKER), ""
                    symbols = ()
                elif kind < P_NO_TICKER + P_CASHTAG_ONLY:
                    title, text = _text(rng, ticker, tone, cashtag_only=True)
                    symbols = ()
                elif kind < P_NO_TICKER + P_CASHTAG_ONLY + P_TWO_TICKERS:
                    other = rng.choice([t for t in TICKERS if t != ticker])
                    title, text = _text(rng, ticker, tone, cashtag_only=False)
                    text = f"{text} Also watching {other}.".strip()
                    symbols = (ticker, other)
                else:
                    title, text = _text(rng, ticker, tone, cashtag_only=False)
                    symbols = (ticker,)
                post = SocialPost(
                    trace_id=f"{0x5E << 120 | n:032x}",
                    ts_event=ts,
                    ts_init=ts,
                    source=SOURCE,
                    post_id=f"syn{n:06d}",
                    channel=rng.choice(CHANNELS),
                    author=f"synthetic_user_{rng.randrange(2000):04d}",
                    title=title,
                    text=text,
                    symbols=symbols,
                    score=max(0, int(rng.expovariate(1 / 8.0))),
                )
                rows.append((ts, n, post.model_dump(mode="json")))
    rows.sort(key=lambda r: (r[0], r[1]))
    buf = io.StringIO()
    for _, _, doc in rows:
        buf.write(json.dumps(doc, separators=(",", ":")))
        buf.write("\n")
    return gzip.compress(buf.getvalue().encode(), compresslevel=9, mtime=0)


def main() -> None:
    data = generate()
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
