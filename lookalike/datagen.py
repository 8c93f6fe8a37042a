"""Synthetic telecom/streaming customer base with planted, partly recoverable segment structure.

Every customer mixes a few latent *archetypes* (sports fan, kids family, cinephile, ...).
The archetype mix drives everything observable under legitimate interest (viewing genres,
dayparts, channels, devices, mobile and roaming usage, technical configuration, plan) and,
together with demographics and region, the marketing segments of opt-in customers. A
separate set of latent *navigation interests*, independent of everything else, drives web
navigation and the ``navigation`` segments, which no legitimate-interest model can recover.
The story and the segment table are in ``docs/data.md``.

Generation is vectorised numpy, chunked by customer so 1M customers and ~50M viewing
sessions stream into Parquet without holding everything in memory. Output is one Parquet
file per raw table (contract: ``docs/contracts.md`` section 1), written atomically.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from tqdm import tqdm

from lookalike.artifacts import atomic_dir, write_manifest
from lookalike.config import (
    Fraction,
    IsoDate,
    PositiveFloat,
    PositiveInt,
    cli_overrides,
    config_to_dict,
    load_config,
    stage_config,
)
from lookalike.errors import ConfigError

log = logging.getLogger(__name__)

US_PER_DAY = 86_400 * 1_000_000
TS_TYPE = pa.timestamp("us", tz="UTC")

ARCHETYPES = (
    "sports_fan", "kids_family", "cinephile", "news_junkie", "gamer",
    "traveller", "premium_tech", "budget", "series_binger", "culture_lover",
)
GENRES = ("sports", "kids", "movies", "series", "news", "documentary", "music", "reality")
DAYPARTS = ("morning", "afternoon", "prime", "late")
CHANNELS = ("linear", "vod", "catchup", "sports_app", "kids_app", "partner_ott")
DEVICE_TYPES = ("smart_tv", "stb", "mobile", "tablet", "console", "pc")
PLANS = ("basic", "standard", "premium", "sports", "family")
CONTRACTS = ("prepaid", "monthly", "annual", "bundle")
PAYMENTS = ("card", "direct_debit", "transfer")
GENDERS = ("F", "M", "X")
CONNECTIONS = ("fiber", "dsl", "cable", "4g")
ROUTERS = ("HGU-1", "HGU-2", "HGU-3", "MitraStar", "Askey-6")
FIRMWARES = ("fw-3.1", "fw-3.4", "fw-4.0", "fw-4.2")
NAV_INTERESTS = (
    "automotive", "mortgage", "fashion", "health", "pets",
    "diy_home", "luxury", "crypto", "wedding", "jobs",
)
NAV_CATEGORIES = (*NAV_INTERESTS, "general_news", "social")
OS_BY_DEVICE: dict[str, tuple[str, ...]] = {
    "smart_tv": ("tizen", "webos", "android_tv"),
    "stb": ("operator_os",),
    "mobile": ("android", "ios"),
    "tablet": ("android", "ipados"),
    "console": ("playstation", "xbox"),
    "pc": ("windows", "macos", "linux"),
}
SCREEN_BY_DEVICE = {"smart_tv": (50.0, 10.0), "stb": (43.0, 8.0), "mobile": (6.3, 0.4),
                    "tablet": (10.5, 1.2), "console": (55.0, 8.0), "pc": (15.6, 5.0)}
N_REGION_CLUSTERS = 25
# Region clusters that are rural (slow connections) and coastal (travel, tourism).
RURAL_CLUSTERS = (3, 7, 11, 19, 23)
COASTAL_CLUSTERS = (2, 5, 13, 17)
METRO_CLUSTERS = (0, 1)

# Row = archetype, columns = genre affinities (unnormalised).
GENRE_AFFINITY = np.array([
    # spo  kid  mov  ser  new  doc  mus  rea
    [8.0, 0.3, 1.0, 1.0, 1.5, 0.5, 0.3, 0.5],  # sports_fan
    [0.3, 8.0, 1.5, 1.0, 0.3, 0.8, 0.8, 1.0],  # kids_family
    [0.3, 0.2, 8.0, 2.0, 0.3, 1.5, 0.5, 0.3],  # cinephile
    [1.0, 0.1, 0.5, 1.0, 8.0, 2.5, 0.3, 0.5],  # news_junkie
    [1.5, 0.5, 2.0, 2.0, 0.2, 0.5, 1.0, 0.5],  # gamer
    [0.8, 0.3, 1.5, 1.5, 1.5, 3.0, 0.8, 0.5],  # traveller
    [1.5, 0.5, 3.0, 3.0, 1.0, 1.5, 0.8, 0.3],  # premium_tech
    [1.0, 1.0, 1.0, 1.5, 1.5, 0.5, 1.0, 4.0],  # budget
    [0.3, 0.5, 1.5, 8.0, 0.5, 0.5, 0.3, 2.0],  # series_binger
    [0.2, 0.5, 2.5, 1.0, 1.5, 4.0, 5.0, 0.2],  # culture_lover
])
DAYPART_AFFINITY = np.array([
    # mor  aft  pri  lat
    [0.5, 1.5, 4.0, 1.5],
    [3.0, 3.0, 2.0, 0.2],
    [0.3, 0.8, 4.0, 2.5],
    [4.0, 1.5, 2.5, 0.5],
    [0.3, 1.5, 2.5, 4.0],
    [1.5, 1.5, 2.5, 1.0],
    [0.8, 1.0, 4.0, 1.5],
    [1.5, 2.5, 3.0, 0.8],
    [0.5, 1.0, 3.0, 3.5],
    [1.0, 2.0, 3.5, 0.8],
])
CHANNEL_AFFINITY = np.array([
    # lin  vod  cat  spa  kap  ott
    [2.0, 0.5, 0.8, 5.0, 0.1, 0.5],
    [1.5, 2.0, 1.0, 0.1, 5.0, 0.8],
    [0.5, 5.0, 1.0, 0.2, 0.2, 3.0],
    [6.0, 0.3, 2.0, 0.3, 0.1, 0.2],
    [0.5, 3.0, 0.5, 1.0, 0.3, 3.0],
    [1.5, 2.0, 2.5, 0.5, 0.3, 1.0],
    [0.8, 4.0, 1.0, 1.0, 0.3, 3.0],
    [5.0, 0.8, 2.0, 0.3, 0.5, 0.2],
    [0.5, 4.0, 2.0, 0.2, 0.2, 4.0],
    [2.0, 3.0, 2.0, 0.2, 0.3, 1.5],
])
DEVICE_AFFINITY = np.array([
    # stv  stb  mob  tab  con  pc
    [3.0, 3.0, 1.5, 0.5, 0.3, 0.3],
    [2.5, 3.0, 1.0, 3.5, 0.8, 0.3],
    [4.0, 1.5, 0.5, 1.0, 0.3, 1.0],
    [1.0, 4.0, 1.0, 1.0, 0.1, 1.0],
    [1.5, 0.5, 2.0, 0.5, 5.0, 2.5],
    [1.0, 0.8, 4.0, 2.5, 0.2, 1.0],
    [4.0, 1.0, 2.5, 2.5, 1.0, 2.0],
    [0.8, 4.0, 1.5, 0.3, 0.2, 0.2],
    [2.0, 1.0, 3.0, 2.0, 0.3, 1.5],
    [2.5, 2.0, 1.0, 2.0, 0.1, 1.5],
])
# Per archetype: viewing activity, mobile data, roaming propensity, intl calls, 5G affinity.
ARCHETYPE_TRAITS = np.array([
    # act  data  roam  intl  g5
    [1.4, 1.2, 0.3, 0.5, 0.5],
    [1.2, 0.9, 0.4, 0.4, 0.3],
    [1.3, 0.8, 0.5, 0.5, 0.4],
    [1.1, 0.6, 0.3, 0.5, 0.2],
    [1.0, 2.0, 0.3, 0.4, 0.8],
    [0.6, 1.8, 4.0, 3.0, 0.6],
    [1.1, 2.2, 1.2, 1.0, 1.0],
    [0.8, 0.5, 0.1, 0.6, 0.05],
    [1.8, 1.4, 0.4, 0.4, 0.5],
    [0.9, 0.8, 1.5, 1.5, 0.3],
])
ARCHETYPE_PREVALENCE = np.array([0.16, 0.14, 0.10, 0.10, 0.09, 0.07, 0.08, 0.12, 0.10, 0.06])
GENRE_MEAN_MINUTES = np.array([85.0, 35.0, 105.0, 48.0, 25.0, 50.0, 30.0, 45.0])


@stage_config
class DatagenConfig:
    customers: PositiveInt = 10_000
    seed: int = 42
    end_date: IsoDate = "2026-11-22"
    history_days: Annotated[int, Field(ge=14)] = 120
    out_dir: Path = Path("data/raw")
    sessions_per_customer_per_week: PositiveFloat = 3.0
    navigation_events_per_customer_per_week: PositiveFloat = 4.0
    opt_in_rate: Annotated[float, Field(gt=0, lt=1)] = 0.35
    suppression_rate: Fraction = 0.02
    n_regions: PositiveInt = 3_000
    region_zipf_exponent: float = 1.05
    n_segments: int = 60
    # The output depends on chunk size too (one random stream per chunk); keep it fixed.
    chunk_customers: PositiveInt = 100_000

    def __post_init__(self) -> None:
        if self.n_segments != 60:
            raise ConfigError("n_segments is fixed at 60 by the segment catalog")


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class SegmentDef:
    segment_id: str
    name: str
    kind: str
    description: str
    prevalence: float
    score: Callable[[dict[str, np.ndarray]], np.ndarray]


def _a(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    index = ARCHETYPES.index(name)
    return lambda c: c["archetypes"][:, index]


def _genre(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    index = GENRES.index(name)
    return lambda c: c["genre_p"][:, index]


def _daypart(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    index = DAYPARTS.index(name)
    return lambda c: c["daypart_p"][:, index]


def _channel(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    index = CHANNELS.index(name)
    return lambda c: c["channel_p"][:, index]


def _device(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    index = DEVICE_TYPES.index(name)
    return lambda c: c["device_p"][:, index]


def _z(x: np.ndarray) -> np.ndarray:
    std = float(x.std())
    return (x - float(x.mean())) / (std if std > 0 else 1.0)


def _in(values: np.ndarray, members: tuple[int, ...]) -> np.ndarray:
    return np.isin(values, members).astype(np.float64)


def _segment_catalog() -> list[SegmentDef]:
    """60 segments: 25 behavioural, 12 demographic, 13 mixed, 10 navigation.

    Each score is a continuous latent; ``_assign_segments`` turns it into memberships with a
    prevalence-matched threshold plus logistic noise. Scores are z-scored so that the
    threshold, not the scale, sets the size.
    """
    plan = lambda c, p: (c["plan"] == PLANS.index(p)).astype(np.float64)  # noqa: E731
    age = lambda c: c["age"]  # noqa: E731
    beh = [
        ("sports_enthusiasts", "heavy sports viewers", lambda c: _z(_genre("sports")(c)) + _z(c["activity"]) * 0.3),
        ("kids_content_households", "kids content share", lambda c: _z(_genre("kids")(c))),
        ("movie_buffs", "film-heavy viewing", lambda c: _z(_genre("movies")(c))),
        ("series_bingers", "long series sessions", lambda c: _z(_genre("series")(c)) + 0.5 * _z(c["activity"])),
        ("news_followers", "news share and morning viewing", lambda c: _z(_genre("news")(c)) + 0.3 * _z(_daypart("morning")(c))),
        ("documentary_lovers", "documentary share", lambda c: _z(_genre("documentary")(c))),
        ("music_fans", "music content share", lambda c: _z(_genre("music")(c))),
        ("reality_tv_fans", "reality share", lambda c: _z(_genre("reality")(c))),
        ("late_night_viewers", "late daypart viewing", lambda c: _z(_daypart("late")(c))),
        ("morning_viewers", "morning daypart viewing", lambda c: _z(_daypart("morning")(c))),
        ("daytime_viewers", "afternoon viewing", lambda c: _z(_daypart("afternoon")(c))),
        ("heavy_viewers", "top total viewing time", lambda c: _z(np.log(c["activity"]))),
        ("light_viewers", "low total viewing time", lambda c: -_z(np.log(c["activity"]))),
        ("vod_first", "on-demand over linear", lambda c: _z(_channel("vod")(c)) + 0.5 * _z(_channel("partner_ott")(c))),
        ("linear_tv_loyalists", "linear channel share", lambda c: _z(_channel("linear")(c))),
        ("catchup_users", "catch-up share", lambda c: _z(_channel("catchup")(c))),
        ("console_gamers", "console owners and gamers", lambda c: _z(_device("console")(c)) + 0.5 * _z(_a("gamer")(c))),
        ("multiscreen_households", "many devices", lambda c: _z(c["n_devices"].astype(np.float64))),
        ("tablet_viewers", "tablet viewing", lambda c: _z(_device("tablet")(c))),
        ("mobile_first_viewers", "viewing on mobile", lambda c: _z(_device("mobile")(c))),
        ("heavy_mobile_data", "high mobile data usage", lambda c: _z(np.log(c["data_scale"] + 0.01))),
        ("frequent_travellers", "roaming days", lambda c: _z(c["roam_rate"])),
        ("international_callers", "international call minutes", lambda c: _z(c["intl_rate"])),
        ("uhd_enthusiasts", "4K/UHD set-ups", lambda c: c["uhd"] * 1.5 + 0.5 * _z(_a("premium_tech")(c))),
        ("early_5g_adopters", "5G share", lambda c: _z(c["g5"])),
    ]
    demo = [
        ("young_adults", "aged 18-24", lambda c: (age(c) < 25) * 3.0 - 0.5 * _z(age(c))),
        ("family_starters", "aged 28-40", lambda c: ((age(c) >= 28) & (age(c) <= 40)) * 3.0 - np.abs(age(c) - 34) / 10),
        ("seniors", "aged 65+", lambda c: (age(c) >= 65) * 3.0 + 0.5 * _z(age(c))),
        ("women_25_44", "women aged 25-44", lambda c: ((c["gender"] == 0) & (age(c) >= 25) & (age(c) < 45)) * 3.0 - np.abs(age(c) - 35) / 20),
        ("men_45_64", "men aged 45-64", lambda c: ((c["gender"] == 1) & (age(c) >= 45) & (age(c) < 65)) * 3.0 - np.abs(age(c) - 55) / 20),
        ("metro_residents", "capital metro region cluster", lambda c: _in(c["region_cluster"], METRO_CLUSTERS) * 3.0 + c["region_u"]),
        ("rural_residents", "rural region clusters", lambda c: _in(c["region_cluster"], RURAL_CLUSTERS) * 3.0 + c["region_u"]),
        ("coastal_residents", "coastal region clusters", lambda c: _in(c["region_cluster"], COASTAL_CLUSTERS) * 3.0 + c["region_u"]),
        ("premium_subscribers", "premium plan", lambda c: plan(c, "premium") * 3.0 + 0.5 * _z(_a("premium_tech")(c))),
        ("prepaid_customers", "prepaid contract", lambda c: (c["contract"] == 0) * 3.0 - 0.3 * _z(age(c))),
        ("long_tenure_loyal", "tenure over 8 years", lambda c: _z(c["tenure_years"])),
        ("multi_line_households", "three or more lines", lambda c: _z(c["n_lines"].astype(np.float64))),
    ]
    mixed = [
        ("young_gamers", "under 30 and gamer", lambda c: (age(c) < 30) * 1.5 + _z(_a("gamer")(c))),
        ("senior_news_viewers", "over 60 and news", lambda c: (age(c) >= 60) * 1.5 + _z(_genre("news")(c))),
        ("suburban_families", "family plan, kids content, outside metro", lambda c: plan(c, "family") + _z(_genre("kids")(c)) - _in(c["region_cluster"], METRO_CLUSTERS)),
        ("affluent_travellers", "premium plan and roaming", lambda c: plan(c, "premium") + _z(c["roam_rate"])),
        ("sports_plan_superfans", "sports plan and heavy sports", lambda c: plan(c, "sports") * 1.5 + _z(_genre("sports")(c))),
        ("budget_families", "basic plan and several lines", lambda c: plan(c, "basic") + _z(c["n_lines"].astype(np.float64))),
        ("urban_cinephiles", "metro and movies", lambda c: _in(c["region_cluster"], METRO_CLUSTERS) * 1.5 + _z(_genre("movies")(c))),
        ("rural_linear_viewers", "rural and linear TV", lambda c: _in(c["region_cluster"], RURAL_CLUSTERS) * 1.5 + _z(_channel("linear")(c))),
        ("tech_savvy_professionals", "30-50, premium tech", lambda c: ((age(c) >= 30) & (age(c) < 50)) * 1.0 + _z(_a("premium_tech")(c))),
        ("coastal_culture", "coastal and culture lover", lambda c: _in(c["region_cluster"], COASTAL_CLUSTERS) * 1.5 + _z(_a("culture_lover")(c))),
        ("young_mobile_streamers", "under 30 and mobile viewing", lambda c: (age(c) < 30) * 1.5 + _z(_device("mobile")(c))),
        ("women_series_fans", "women and series", lambda c: (c["gender"] == 0) * 1.2 + _z(_genre("series")(c))),
        ("loyal_premium_sports", "long tenure and sports", lambda c: _z(c["tenure_years"]) + _z(_genre("sports")(c))),
    ]
    nav = [
        (f"nav_{interest}_intenders", f"web navigation interest: {interest}",
         (lambda i: lambda c: c["nav_interest"][:, i] * 3.0)(index))
        for index, interest in enumerate(NAV_INTERESTS)
    ]
    groups = [("behavioural", beh), ("demographic", demo), ("mixed", mixed), ("navigation", nav)]
    # Sizes from ~30% down to ~1% of opt-ins, interleaved across kinds so every kind has
    # common and rare segments.
    total = sum(len(g) for _, g in groups)
    # Skewed towards small segments so customers hold ~3-4 on average (1-6 each).
    prevalences = 0.01 * 30.0 ** (np.linspace(1.0, 0.0, total) ** 1.8)
    order = np.argsort(np.random.default_rng(1234).permutation(total))
    segments: list[SegmentDef] = []
    position = 0
    for kind, members in groups:
        for name, description, score in members:
            segments.append(SegmentDef(
                segment_id=f"S{position + 1:02d}", name=name, kind=kind, description=description,
                prevalence=float(prevalences[order[position]]), score=score,
            ))
            position += 1
    return segments


SEGMENTS = _segment_catalog()


# --------------------------------------------------------------------------- helpers


def _sample_categorical(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """One draw per row of ``probs`` (or per ``rows`` index into it), vectorised."""
    cdf = np.cumsum(probs, axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    if rows is not None:
        cdf = cdf[rows]
    u = rng.random((cdf.shape[0], 1))
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int8)


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    gamma = rng.gamma(alpha)
    return gamma / gamma.sum(axis=1, keepdims=True)


def _strings(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(values).take(pa.array(codes.astype(np.int32)))


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=pa.int64()).cast(TS_TYPE)


def _ts_nullable(us: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=pa.int64(), mask=~valid).cast(TS_TYPE)


def _day_us(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 1_000_000


class _TableWriters:
    """One ParquetWriter per raw table; each chunk appends a row group."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, name: str, columns: dict[str, pa.Array]) -> None:
        table = pa.table(columns)
        writer = self.writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(self.directory / f"{name}.parquet", table.schema, compression="zstd")
            self.writers[name] = writer
        writer.write_table(table)
        self.rows[name] = self.rows.get(name, 0) + table.num_rows

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


# --------------------------------------------------------------------------- generator


def _customer_latents(rng: np.random.Generator, n: int, config: DatagenConfig, end_us: int) -> dict[str, np.ndarray]:
    """Per-customer hidden and observable attributes (everything that is not an event)."""
    k = len(ARCHETYPES)
    # 1-3 archetypes per customer, weighted by prevalence, mixed with a Dirichlet.
    n_arch = rng.choice([1, 2, 3], size=n, p=[0.45, 0.4, 0.15])
    scores = rng.random((n, k)) ** (1.0 / ARCHETYPE_PREVALENCE)  # weighted sampling w/o replacement
    rank = np.argsort(-scores, axis=1)
    mask = np.zeros((n, k), dtype=bool)
    for j in range(3):
        chosen = n_arch > j
        mask[np.flatnonzero(chosen), rank[chosen, j]] = True
    weights = _dirichlet_rows(rng, np.where(mask, 2.0, 1e-3))
    archetypes = weights * mask

    def mix(affinity: np.ndarray, concentration: float) -> np.ndarray:
        mean = archetypes @ affinity + 0.05
        mean /= mean.sum(axis=1, keepdims=True)
        return _dirichlet_rows(rng, mean * concentration)

    genre_p = mix(GENRE_AFFINITY, 30.0)
    daypart_p = mix(DAYPART_AFFINITY, 25.0)
    channel_p = mix(CHANNEL_AFFINITY, 25.0)
    device_p = mix(DEVICE_AFFINITY, 15.0)
    traits = archetypes @ ARCHETYPE_TRAITS
    activity = traits[:, 0] * rng.lognormal(0.0, 0.45, n)

    def arch(name: str) -> np.ndarray:
        return archetypes[:, ARCHETYPES.index(name)]

    # Demographics, nudged by archetype (gamers young, news junkies older, families 30-45).
    age = rng.normal(46, 15, n) - 14 * arch("gamer") + 14 * arch("news_junkie") - 8 * arch("kids_family") * (rng.random(n) < 0.7)
    age += np.where(arch("kids_family") > 0.3, (38 - age) * 0.5, 0)
    age = np.clip(age, 18, 90)
    birth_us = end_us - (age * 365.25 * US_PER_DAY).astype(np.int64) - rng.integers(0, 365 * US_PER_DAY, n)
    gender = rng.choice(3, size=n, p=[0.49, 0.49, 0.02])
    flip = rng.random(n) < 0.25 * (arch("sports_fan") + arch("gamer"))
    gender = np.where(flip & (gender == 0), 1, gender)

    # Region: Zipf-like codes; clusters group codes (a cluster of towns, e.g. the coast).
    ranks = np.arange(1, config.n_regions + 1, dtype=np.float64)
    region_p = 1.0 / (ranks + 5.0) ** config.region_zipf_exponent
    region = rng.choice(config.n_regions, size=n, p=region_p / region_p.sum())
    region_cluster = np.where(region < 40, region % 2, 2 + (region * 7919) % (N_REGION_CLUSTERS - 2))
    rural = _in(region_cluster, RURAL_CLUSTERS)

    # Tenure: most customers long-standing, ~4% joined inside the history window.
    tenure_days = np.where(
        rng.random(n) < 0.04,
        rng.integers(1, config.history_days, n),
        (rng.exponential(5.0, n) * 365 + config.history_days).astype(np.int64),
    )
    tenure_days = np.minimum(tenure_days, 25 * 365)
    signup_us = end_us - tenure_days * US_PER_DAY - rng.integers(0, US_PER_DAY, n)

    plan_logits = np.stack([
        1.0 + 2.0 * arch("budget"),
        1.2 + 0.0 * arch("budget"),
        0.2 + 2.5 * arch("premium_tech") + 1.0 * arch("cinephile"),
        0.0 + 3.0 * arch("sports_fan"),
        0.1 + 3.0 * arch("kids_family"),
    ], axis=1)
    plan = _sample_categorical(rng, np.exp(plan_logits))
    contract_logits = np.stack([
        0.0 + 2.5 * arch("budget") - 0.02 * (age - 40),
        1.5 * np.ones(n),
        0.8 + 0.5 * arch("premium_tech"),
        0.8 + 1.0 * (plan == PLANS.index("family")),
    ], axis=1)
    contract = _sample_categorical(rng, np.exp(contract_logits))
    n_lines = 1 + rng.poisson(0.4 + 1.6 * arch("kids_family") + 0.8 * (plan == PLANS.index("family")))
    payment = _sample_categorical(rng, np.tile([0.35, 0.55, 0.10], (n, 1)) + np.stack(
        [0.3 * arch("gamer"), 0.2 * (age > 50), 0.05 * arch("budget")], axis=1))

    n_devices = np.clip(1 + rng.poisson(0.8 + 2.5 * device_p.max(axis=1) * activity / 2 + 0.8 * arch("premium_tech")), 1, 8)
    has_mobile_line = rng.random(n) < np.clip(0.65 + 0.3 * (traits[:, 1] > 1.0), 0, 0.97)
    data_scale = traits[:, 1] * rng.lognormal(0.0, 0.5, n) * has_mobile_line
    roam_rate = traits[:, 2] * rng.lognormal(0.0, 0.6, n) * has_mobile_line
    intl_rate = traits[:, 3] * rng.lognormal(0.0, 0.6, n) * has_mobile_line
    g5 = np.clip(traits[:, 4] * rng.beta(2, 3, n) * 1.4 * (1 - 0.5 * rural), 0, 1)
    uhd = (rng.random(n) < np.clip(0.1 + 0.7 * arch("premium_tech") + 0.3 * arch("cinephile"), 0, 0.95)).astype(np.float64)

    # Navigation interests: independent of every other latent (only consent data sees them).
    nav_prevalence = np.array([s.prevalence for s in SEGMENTS if s.kind == "navigation"]) * 1.1
    nav_interest = (rng.random((n, len(NAV_INTERESTS))) < nav_prevalence).astype(np.float64)
    nav_interest *= rng.uniform(0.5, 1.5, nav_interest.shape)

    return {
        "archetypes": archetypes, "genre_p": genre_p, "daypart_p": daypart_p, "channel_p": channel_p,
        "device_p": device_p, "activity": activity, "age": age, "birth_us": birth_us, "gender": gender,
        "region": region, "region_cluster": region_cluster, "region_u": (region * 2654435761 % 1000) / 1000.0, "rural": rural, "signup_us": signup_us,
        "tenure_years": tenure_days / 365.25, "plan": plan, "contract": contract, "n_lines": n_lines,
        "payment": payment, "n_devices": n_devices, "has_mobile_line": has_mobile_line,
        "data_scale": data_scale, "roam_rate": roam_rate, "intl_rate": intl_rate, "g5": g5, "uhd": uhd,
        "nav_interest": nav_interest,
    }


def _assign_segments(rng: np.random.Generator, c: dict[str, np.ndarray], members: np.ndarray) -> np.ndarray:
    """Boolean (n_members, 60) memberships: prevalence-matched thresholds, noise, 1-6 each."""
    sub = {key: value[members] for key, value in c.items()}
    n = len(members)
    margins = np.empty((n, len(SEGMENTS)))
    for j, segment in enumerate(SEGMENTS):
        score = np.asarray(segment.score(sub), dtype=np.float64) + rng.normal(0.0, 0.5, n)
        threshold = np.quantile(score, 1.0 - segment.prevalence) if n > 1 else 0.0
        margins[:, j] = score - threshold
    # Logistic noise around the threshold: memberships are likely, not certain.
    member = rng.random(margins.shape) < 1.0 / (1.0 + np.exp(-margins / 0.15))
    member |= rng.random(margins.shape) < 0.002  # rare spurious assignments
    # Keep 1-6 per customer, the most confident first.
    ranked = np.argsort(-np.where(member, margins, -np.inf), axis=1)
    keep = np.zeros_like(member)
    rows = np.arange(n)
    for j in range(6):
        col = ranked[:, j]
        keep[rows, col] = member[rows, col]
    empty = ~keep.any(axis=1)
    keep[rows[empty], np.argmax(margins[empty], axis=1)] = True
    return keep


def _generate_chunk(
    rng: np.random.Generator, ids: np.ndarray, config: DatagenConfig, end_us: int, writers: _TableWriters
) -> None:
    n = len(ids)
    start_us = end_us - config.history_days * US_PER_DAY
    c = _customer_latents(rng, n, config, end_us)
    signup_us = c["signup_us"]

    # ---- customers: one row at signup, plus a plan change for ~6% within the history.
    changes = (rng.random(n) < 0.06) & (signup_us < start_us)
    change_us = start_us + rng.integers(0, config.history_days * US_PER_DAY, n)
    old_plan = np.where(changes, (c["plan"] + 1 + rng.integers(0, len(PLANS) - 1, n)) % len(PLANS), c["plan"])
    rows = np.concatenate([np.arange(n), np.flatnonzero(changes)])
    first = np.arange(len(rows)) < n
    plan_col = np.where(first, old_plan[rows], c["plan"][rows])
    updated = np.where(first, signup_us[rows], change_us[rows])
    order = np.lexsort((updated, ids[rows]))
    rows, plan_col, updated = rows[order], plan_col[order], updated[order]
    birth_days = (c["birth_us"][rows] // US_PER_DAY).astype(np.int32)
    writers.write("customers", {
        "customer_id": pa.array(ids[rows]),
        "birth_date": pa.array(birth_days, type=pa.int32()).cast(pa.date32()),
        "gender": _strings(GENDERS, c["gender"][rows]),
        "signup_date": _ts(signup_us[rows]),
        "plan": _strings(PLANS, plan_col),
        "contract_type": _strings(CONTRACTS, c["contract"][rows]),
        "region_code": pa.array([f"R{r:04d}" for r in range(config.n_regions)]).take(pa.array(c["region"][rows])),
        "n_lines": pa.array(c["n_lines"][rows].astype(np.int32)),
        "payment_method": _strings(PAYMENTS, c["payment"][rows]),
        "updated_at": _ts(updated),
    })

    # ---- consent: history. ~35% opted in at the end date; ~20% of those opted in inside
    # the history window (point-in-time matters); ~3% opted out inside it.
    opt_in_end = rng.random(n) < config.opt_in_rate
    late = opt_in_end & (rng.random(n) < 0.2)
    opted_out = ~opt_in_end & (rng.random(n) < 0.03)
    change_at = np.maximum(start_us, signup_us) + (rng.random(n) * (end_us - np.maximum(start_us, signup_us) - US_PER_DAY)).astype(np.int64)
    change_at = np.maximum(change_at, signup_us + 1)
    changed = late | opted_out
    initial_opt = np.where(changed, ~opt_in_end, opt_in_end)
    c_rows = np.concatenate([np.arange(n), np.flatnonzero(changed)])
    c_first = np.arange(len(c_rows)) < n
    c_opt = np.where(c_first, initial_opt[c_rows], opt_in_end[c_rows])
    c_from = np.where(c_first, signup_us[c_rows], change_at[c_rows])
    c_to_valid = c_first & changed[c_rows]
    c_to = np.where(c_to_valid, change_at[c_rows], 0)
    order = np.lexsort((c_from, ids[c_rows]))
    writers.write("consent", {
        "customer_id": pa.array(ids[c_rows][order]),
        "opt_in": pa.array(c_opt[order]),
        "valid_from": _ts(c_from[order]),
        "valid_to": _ts_nullable(c_to[order], c_to_valid[order]),
    })
    opt_in_since = np.where(late, change_at, signup_us)

    # ---- suppression (objection to profiling), mostly older than the history window.
    suppressed = np.flatnonzero(rng.random(n) < config.suppression_rate)
    objected = signup_us[suppressed] + (rng.random(len(suppressed)) * (end_us - signup_us[suppressed] - 1)).astype(np.int64)
    writers.write("suppression", {"customer_id": pa.array(ids[suppressed]), "objected_at": _ts(objected)})

    # ---- viewing sessions.
    weeks = config.history_days / 7.0
    active_from = np.maximum(start_us, signup_us)
    active_frac = (end_us - active_from) / (end_us - start_us)
    n_sessions = rng.poisson(config.sessions_per_customer_per_week * weeks * c["activity"] / 1.15 * active_frac)
    owner = np.repeat(np.arange(n), n_sessions)
    m = len(owner)
    day = (active_from[owner] // US_PER_DAY + (rng.random(m) * ((end_us - active_from[owner]) / US_PER_DAY)).astype(np.int64))
    daypart = _sample_categorical(rng, c["daypart_p"], owner)
    hour_lo = np.array([6, 12, 18, 0])[daypart]
    hour_span = np.array([6, 6, 5, 6])[daypart]
    hour = hour_lo + rng.random(m) * hour_span
    start_ts = day * US_PER_DAY + (hour * 3_600_000_000).astype(np.int64)
    start_ts = np.clip(start_ts, active_from[owner], end_us - 1)
    genre = _sample_categorical(rng, c["genre_p"], owner)
    channel = _sample_categorical(rng, c["channel_p"], owner)
    device = _sample_categorical(rng, c["device_p"], owner)
    minutes = GENRE_MEAN_MINUTES[genre] * rng.lognormal(-0.18, 0.6, m) * (0.7 + 0.3 * c["activity"][owner])
    writers.write("viewing_sessions", {
        "customer_id": pa.array(ids[owner]),
        "start_ts": _ts(start_ts),
        "genre": _strings(GENRES, genre),
        "channel": _strings(CHANNELS, channel),
        "minutes": pa.array(np.round(minutes, 1).astype(np.float64)),
        "device_type": _strings(DEVICE_TYPES, device),
        "daypart": _strings(DAYPARTS, daypart),
    })

    # ---- devices: the viewing-device preference drives the inventory; the first device
    # arrives at signup, later ones over the tenure (some inside the history window).
    d_owner = np.repeat(np.arange(n), c["n_devices"])
    d = len(d_owner)
    d_type = _sample_categorical(rng, c["device_p"] + 0.02, d_owner)
    first_device = np.r_[True, d_owner[1:] != d_owner[:-1]]
    reg = signup_us[d_owner] + (rng.random(d) ** 0.7 * (end_us - signup_us[d_owner] - 1)).astype(np.int64)
    reg = np.where(first_device, signup_us[d_owner], reg)
    type_names = np.array(DEVICE_TYPES)[d_type]
    os_codes = np.empty(d, dtype=object)
    screen = np.empty(d)
    apple = rng.random(d) < 0.25 + 0.4 * c["archetypes"][d_owner, ARCHETYPES.index("premium_tech")]
    for t_index, t_name in enumerate(DEVICE_TYPES):
        sel = d_type == t_index
        options = OS_BY_DEVICE[t_name]
        pick = rng.integers(0, len(options), int(sel.sum()))
        if t_name in ("mobile", "tablet"):
            pick = np.where(apple[sel], len(options) - 1, 0)
        os_codes[sel] = np.array(options)[pick]
        mean, sd = SCREEN_BY_DEVICE[t_name]
        screen[sel] = np.clip(rng.normal(mean, sd, int(sel.sum())) + 8 * (t_name in ("smart_tv", "console")) * c["uhd"][d_owner[sel]], 4, 85)
    age_years = (end_us - reg) / (365.25 * US_PER_DAY)
    hw_gen = np.clip(np.round(6 - age_years * 0.8 + rng.normal(0, 0.7, d) + 0.8 * c["archetypes"][d_owner, ARCHETYPES.index("premium_tech")]), 1, 7)
    writers.write("devices", {
        "customer_id": pa.array(ids[d_owner]),
        "device_id": pa.array(ids[d_owner] * 16 + (np.arange(d) - np.searchsorted(d_owner, d_owner))),
        "device_type": pa.array(type_names.tolist(), type=pa.string()),
        "os": pa.array(os_codes.tolist(), type=pa.string()),
        "screen_inches": pa.array(np.round(screen, 1)),
        "hw_generation": pa.array(hw_gen.astype(np.int32)),
        "registered_at": _ts(reg),
    })

    # ---- mobile usage: weekly rows aligned to the snapshot grid (end date - 7k days).
    mobile = np.flatnonzero(c["has_mobile_line"])
    n_weeks = config.history_days // 7
    week_start = end_us - (np.arange(n_weeks, 0, -1) * 7 * US_PER_DAY)
    mu_owner = np.repeat(mobile, n_weeks)
    mu_week = np.tile(week_start, len(mobile))
    live = mu_week >= signup_us[mu_owner] - 7 * US_PER_DAY
    mu_owner, mu_week = mu_owner[live], mu_week[live]
    k = len(mu_owner)
    roam_days = np.minimum(rng.poisson(0.12 * c["roam_rate"][mu_owner]), 7)
    writers.write("mobile_usage", {
        "customer_id": pa.array(ids[mu_owner]),
        "usage_date": _ts(mu_week),
        "data_gb": pa.array(np.round(c["data_scale"][mu_owner] * rng.gamma(2.0, 1.2, k), 3)),
        "voice_min": pa.array(np.round(rng.gamma(2.0, 40.0, k) * (0.6 + 0.01 * c["age"][mu_owner]), 1)),
        "sms": pa.array(rng.poisson(2.0, k).astype(np.int32)),
        "roaming_days": pa.array(roam_days.astype(np.int32)),
        "roaming_data_gb": pa.array(np.round(roam_days * c["data_scale"][mu_owner] * rng.gamma(2.0, 0.15, k), 3)),
        "roaming_country_count": pa.array(np.where(roam_days > 0, 1 + rng.poisson(0.3 * roam_days), 0).astype(np.int32)),
        "intl_call_min": pa.array(np.round(rng.gamma(1.0, 8.0, k) * c["intl_rate"][mu_owner], 1)),
        "share_5g": pa.array(np.round(np.clip(c["g5"][mu_owner] + rng.normal(0, 0.05, k), 0, 1), 3)),
    })

    # ---- technical configuration: state at signup, ~15% change inside the history.
    t_change = (rng.random(n) < 0.15) & (signup_us < start_us)
    t_rows = np.concatenate([np.arange(n), np.flatnonzero(t_change)])
    t_first = np.arange(len(t_rows)) < n
    t_updated = np.where(t_first, signup_us[t_rows], change_us[t_rows] + 3 * US_PER_DAY)
    t_updated = np.minimum(t_updated, end_us - 1)
    tr = len(t_rows)
    rural_rows = c["rural"][t_rows]
    premium = c["archetypes"][t_rows, ARCHETYPES.index("premium_tech")]
    conn_p = np.stack([0.6 - 0.45 * rural_rows + 0.3 * premium, 0.15 + 0.4 * rural_rows, 0.2 * np.ones(tr), 0.05 + 0.25 * rural_rows], axis=1)
    connection = _sample_categorical(rng, np.clip(conn_p, 0.01, None))
    base_bw = np.array([600.0, 30.0, 300.0, 50.0])[connection]
    upgrade = (~t_first) * 1.6 + t_first * 1.0
    writers.write("tech_config", {
        "customer_id": pa.array(ids[t_rows]),
        "updated_at": _ts(t_updated),
        "connection_type": _strings(CONNECTIONS, connection),
        "bandwidth_mbps": pa.array(np.round(base_bw * upgrade * rng.uniform(0.7, 1.3, tr) * (1 + premium), 0)),
        "router_model": _strings(ROUTERS, rng.integers(0, len(ROUTERS), tr) * (1 - (premium > 0.4)) + (premium > 0.4) * 2),
        "stb_firmware": _strings(FIRMWARES, np.minimum(rng.integers(0, 3, tr) + (~t_first), 3)),
        "uhd_enabled": pa.array((c["uhd"][t_rows] > 0.5) | ((~t_first) & (rng.random(tr) < 0.3))),
        "wifi_extender": pa.array(rng.random(tr) < 0.1 + 0.3 * (c["n_devices"][t_rows] > 3)),
        "parental_control": pa.array(rng.random(tr) < 0.05 + 0.8 * c["archetypes"][t_rows, ARCHETYPES.index("kids_family")]),
        "multiroom": pa.array(rng.random(tr) < 0.1 + 0.15 * c["n_lines"][t_rows]),
    })

    # ---- navigation events (sensitive): opt-in customers only, from their opt-in date.
    members = np.flatnonzero(opt_in_end)
    nav_from = np.maximum(start_us, opt_in_since[members])
    nav_frac = (end_us - nav_from) / (end_us - start_us)
    n_nav = rng.poisson(config.navigation_events_per_customer_per_week * weeks * nav_frac * rng.lognormal(0, 0.4, len(members)))
    nav_owner = np.repeat(np.arange(len(members)), n_nav)
    nav_p = np.concatenate([c["nav_interest"][members] * 2.0 + 0.05, np.tile([0.8, 1.2], (len(members), 1))], axis=1)
    category = _sample_categorical(rng, nav_p, nav_owner)
    event_ts = nav_from[nav_owner] + (rng.random(len(nav_owner)) * (end_us - nav_from[nav_owner])).astype(np.int64)
    writers.write("navigation_events", {
        "customer_id": pa.array(ids[members][nav_owner]),
        "event_ts": _ts(event_ts),
        "category": _strings(NAV_CATEGORIES, category),
        "seconds": pa.array(np.round(rng.gamma(2.0, 45.0, len(nav_owner)), 1)),
    })

    # ---- segment assignments (opt-in only): assigned after opt-in; ~30% inside the history
    # window, so the label set grows from one weekly snapshot to the next.
    if len(members):
        membership = _assign_segments(rng, c, members)
        s_owner, s_index = np.nonzero(membership)
        since = opt_in_since[members][s_owner]
        recent = rng.random(len(s_owner)) < 0.3
        window_start = np.maximum(since, start_us)
        assigned = np.where(
            recent | (since >= start_us),
            window_start + (rng.random(len(s_owner)) * (end_us - window_start - 1)).astype(np.int64),
            since + (rng.random(len(s_owner)) * (start_us - since)).astype(np.int64),
        )
        writers.write("segment_assignments", {
            "customer_id": pa.array(ids[members][s_owner]),
            "segment_id": pa.array([SEGMENTS[j].segment_id for j in range(len(SEGMENTS))]).take(pa.array(s_index)),
            "assigned_at": _ts(assigned),
        })


def _catalog_table() -> pa.Table:
    return pa.table({
        "segment_id": [s.segment_id for s in SEGMENTS],
        "name": [s.name for s in SEGMENTS],
        "kind": [s.kind for s in SEGMENTS],
        "description": [s.description for s in SEGMENTS],
    })


def run(config: DatagenConfig) -> Path:
    """Generate every raw table into ``config.out_dir`` (replaced atomically). Returns it."""
    end = date.fromisoformat(str(config.end_date))
    # Timestamps strictly before the end date's midnight: that instant is the last snapshot.
    end_us = _day_us(end)
    seeds = np.random.SeedSequence(config.seed).spawn((config.customers + config.chunk_customers - 1) // config.chunk_customers)
    with atomic_dir(config.out_dir) as tmp:
        writers = _TableWriters(tmp)
        try:
            starts = range(0, config.customers, config.chunk_customers)
            for chunk_seed, first_id in tqdm(list(zip(seeds, starts, strict=True)), desc="datagen", unit="chunk",
                                             disable=len(seeds) < 2):
                ids = np.arange(first_id, min(first_id + config.chunk_customers, config.customers), dtype=np.int64) + 1
                _generate_chunk(np.random.default_rng(chunk_seed), ids, config, end_us, writers)
        finally:
            writers.close()
        pq.write_table(_catalog_table(), tmp / "segment_catalog.parquet")
        rows = dict(writers.rows, segment_catalog=len(SEGMENTS))
        write_manifest(tmp, "raw_tables", config=config_to_dict(config), row_counts=rows,
                       end_date=end.isoformat(), history_start=(end - timedelta(days=config.history_days)).isoformat())
    log.info("datagen: wrote %s", ", ".join(f"{k}={v:,}" for k, v in sorted(rows.items())))
    return Path(config.out_dir)


# --------------------------------------------------------------------------- CLI


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/datagen.yaml)")
    parser.add_argument("--customers", type=int, help="number of customers")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--end-date", help="last day of history (exclusive), ISO date")
    parser.add_argument("--out-dir", help="output directory for the raw tables")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")

    def _run(args: argparse.Namespace) -> int:
        overrides = cli_overrides(args, ["customers", "seed", "end_date", "out_dir"])
        config = load_config(DatagenConfig, args.config, overrides)
        out = run(config)
        print(out)
        return 0

    parser.set_defaults(func=_run)
