"""The image index: SQLite of record (:mod:`.db`), a faiss cache beside it
(:mod:`.faiss_store`), folder indexing (:mod:`.indexer`) and Hamming search (:mod:`.search`).

Nothing here imports TensorFlow: indexing and querying run on an exported NumPy Hasher.
"""

from semhash.index.db import SCHEMA_VERSION, IndexDB, open_index
from semhash.index.faiss_store import faiss_path_for
from semhash.index.indexer import IndexSummary, index_folder
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
    "faiss_path_for",
    "index_folder",
    "index_info",
    "load_index_codes",
    "open_index",
    "query_files",
    "search_codes",
]
