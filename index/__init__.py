"""The image index: SQLite of record (:mod:`.db`), a faiss cache beside it
(:mod:`.faiss_store`), folder indexing (:mod:`.indexer`), Hamming search (:mod:`.search`),
removal and checks (:mod:`.maintenance`), and the one scheme for storing file paths as text
(:mod:`.pathkeys`).

Nothing here imports TensorFlow: indexing and querying run on an exported NumPy Hasher.
"""

from semhash.index.db import SCHEMA_VERSION, IndexDB, database_errors, open_index
from semhash.index.faiss_store import faiss_path_for
from semhash.index.indexer import IndexSummary, index_folder
from semhash.index.maintenance import RemoveSummary, check_index, remove_paths
from semhash.index.pathkeys import key_bytes, key_path, path_key, printable
from semhash.index.search import (
    IndexedCodes,
    Match,
    QueryResult,
    index_info,
    load_index_codes,
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
    "faiss_path_for",
    "index_folder",
    "index_info",
    "key_bytes",
    "key_path",
    "load_index_codes",
    "open_index",
    "path_key",
    "printable",
    "query_files",
    "remove_paths",
    "search_codes",
]
