"""No look-ahead: changing prices after day T changes no decision made on or before T."""

from __future__ import annotations

import csv
import gzip
import random
from datetime import UTC, date, datetime
from pathlib import Path

from engine.data import bundled_path

from .conftest import default_config, replay

START, END = date(2005, 1, 1), date(2007, 6, 30)


def _write_prices(path: Path, *, scramble_after: date | None) -> None:
    """The bundled closes for START..END; after `scramble_after` each price is multiplied by a
    random factor (seeded), i.e. a completely different future."""
    rng = random.Random(1234)
    with gzip.open(bundled_path("us_stocks_20_daily_close.csv.gz"), "rt", newline="") as src:
        rows = list(csv.reader(src))
    header, body = rows[0], rows[1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in body:
            day = date.fromisoformat(row[0][:10])
            if not START <= day <= END:
                continue
            if scramble_after is not None and day > scramble_after:
                row = [row[0]] + [
                    f"{float(v) * rng.uniform(0.6, 1.4):.6f}" if v else "" for v in row[1:]
                ]
            writer.writerow(row)


def _config():
    cfg = default_config(seed=3)
    stocks = cfg.sources[0].model_copy(update={"paths": [Path("stocks.csv")]})
    return cfg.model_copy(update={"sources": [stocks, *cfg.sources[1:]]})


async def test_replay_when_prices_after_t_change_then_decisions_up_to_t_identical(
    tmp_path: Path,
) -> None:
    # Arrange: two data folders, same relative path, so the config (and its hash) is identical.
    # T is the day of the median intent of the real run, so decisions exist on both sides of T
    # whatever the agents' warm-up.
    _write_prices(tmp_path / "real" / "stocks.csv", scramble_after=None)
    cfg = _config()
    real = await replay(cfg, tmp_path / "run_real", START, END, base_dir=tmp_path / "real")
    intents = real.rows("SELECT ts_event FROM decisions WHERE kind = 'intent' ORDER BY rowid")
    assert len(intents) >= 4, "the real run must trade for the test to prove anything"
    t = date.fromisoformat(intents[len(intents) // 2]["ts_event"][:10])
    _write_prices(tmp_path / "altered" / "stocks.csv", scramble_after=t)
    cutoff = datetime(t.year, t.month, t.day, 23, 59, tzinfo=UTC).isoformat()
    # Act
    altered = await replay(cfg, tmp_path / "run_alt", START, END, base_dir=tmp_path / "altered")
    # Assert
    query = "SELECT json FROM {} WHERE ts_event <= ? ORDER BY rowid"
    for table in ("decisions", "orders"):
        before_real = [r["json"] for r in real.rows(query.format(table), cutoff)]
        before_alt = [r["json"] for r in altered.rows(query.format(table), cutoff)]
        assert before_real, f"no {table} on or before {t}"
        assert before_real == before_alt, f"{table} on or before {t} depend on later prices"
    # ... and the altered future really did change later decisions (the test can fail)
    after = "SELECT json FROM decisions WHERE ts_event > ? ORDER BY rowid"
    assert [r["json"] for r in real.rows(after, cutoff)] != [
        r["json"] for r in altered.rows(after, cutoff)
    ]
