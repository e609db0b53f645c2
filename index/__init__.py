"""The image index: SQLite of record (:mod:`.db`), a Hamming lookup cache beside it
(:mod:`.lookup`), folder indexing (:mod:`.indexer`), bulk import of precomputed codes
(:mod:`.importer`), Hamming search (:mod:`.search`),
removal and checks (:mod:`.maintenance`), and the one scheme for storing file paths as text
(:mod:`.pathkeys`).

Nothing here imports TensorFlow: indexing and querying run on an exported NumPy Hasher.
"""

from semhash.index.db import SCHEMA_VERSION, IndexDB, database_errors, open_index
from semhash.index.indexer import IndexSummary, index_folder
from semhash.index.maintenance import RemoveSummary, check_index, remove_paths
from semhash.index.pathkeys import key_bytes, key_path, path_key, printable
from semhash.index.search import (
    IndexedCodes,
    Match,
    QueryResult,
    index_info,
    load_index_codes,
    lookup_path_for,
    query_codes,
    query_files,
    search_codes,
)

__all__ = [
    "SCHEMA_VERSION",
    "IndexDB",
    "IndexSummary",
    "IndexedCodes",
    "Match",
    "QueryResult",
    "RemoveSummary",
    "check_index",
    "database_errors",
    "index_folder",
    "index_info",
    "key_bytes",
    "key_path",
    "load_index_codes",
    "lookup_path_for",
    "open_index",
    "path_key",
    "printable",
    "query_codes",
    "query_files",
    "remove_paths",
    "search_codes",
]
