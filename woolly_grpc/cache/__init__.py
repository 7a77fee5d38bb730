"""The result cache: a successful call's responses, stored as bytes and replayed on a hit.

`entries` frames entries and hashes keys; `policy` reads what a call may do from its options;
`results.ResultCache` reads and writes entries in the store (never failing a call);
`steps.StepResultCache` caches chain steps one by one. `interceptors/caching.py` applies it all
to gRPC calls.
"""

from .entries import Entry, decode_entry, encode_entry, key_for
from .policy import CachePolicy
from .results import CacheStats, ResultCache
from .steps import StepResultCache

__all__ = [
    "CachePolicy",
    "CacheStats",
    "Entry",
    "ResultCache",
    "StepResultCache",
    "decode_entry",
    "encode_entry",
    "key_for",
]
