"""Files in and out: loading data files (``loading``, ``nxcansas_entries``), rendering results
(``output``: CSV/JSON; ``plotting``: figures), the results file that grows (``result_stream``) and the
watched folder (``folder_watch``). Imports ``core`` only (matplotlib on demand, for figures).
"""
