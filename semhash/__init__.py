"""semhash: semantic hashing for image retrieval.

Data flows one way: files -> arrays (semhash.data) -> codes (semhash.inference) ->
index (semhash.index) -> results (semhash.metrics / semhash.report).  TensorFlow is only
imported by semhash.models and semhash.train, never on the index / query / evaluate paths.
"""

__version__ = "0.1.0"
