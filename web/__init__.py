"""The web face of semhash (installed as semhash.web): a FastAPI app over
:class:`semhash.index.browse.IndexReader` and a static page to browse an index.

Started by ``semhash serve``.  Importing :mod:`semhash` never imports this package (FastAPI
and uvicorn load only when a server is asked for).
"""
