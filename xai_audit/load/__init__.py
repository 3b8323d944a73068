"""Stage 2, loading: the model, the data set and the audited samples, streamed (``loading``, ``samples``),
and the record of what was loaded (``provenance``)."""
