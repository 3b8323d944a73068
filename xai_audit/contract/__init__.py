"""Floor 0, the contract: what plugins and the host share.

The objects that travel between stages (``types``), the hooks (``hookspecs``)
and the helpers a plugin may use (input mapping, layers, batching, statistics,
interventions, image chunks). Plugins reach all of it through
:mod:`xai_audit.api`; nothing here imports a later stage.
"""
