"""The feature store: versioned feature sets shared by agents and stages (memory or Redis)."""

from engine.features.schema import (
    FeatureError,
    FeatureField,
    FeatureSet,
    FeatureValue,
    FieldType,
)
from engine.features.store import FeatureStore, MemoryFeatureStore

__all__ = [
    "FeatureError",
    "FeatureField",
    "FeatureSet",
    "FeatureStore",
    "FeatureValue",
    "FieldType",
    "MemoryFeatureStore",
]
