"""The tracefield web viewer (viser): a trajectory field in the browser, over an SSH tunnel.

``tracefield view SCENE`` runs :func:`viewer.app.serve`. Modules: ``scene`` (what is drawn,
computed once from the field), ``trajectories`` and ``picking`` (pure helpers), ``state``
(what the user chose), ``updates`` (coalescing redraw worker), ``layers/`` (one module per
thing drawn), ``controls`` (the GUI), ``share`` (recordings and downloads), ``app`` (start-up
and wiring).
"""
