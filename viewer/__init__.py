"""The tracefield web viewer (viser): a trajectory field in the browser, over an SSH tunnel.

``tracefield view SCENE`` runs :func:`viewer.app.serve`. Modules: ``state`` (what the user
chose), ``scene`` (what is drawn, computed once from the field), ``trajectories`` and
``picking`` (curves and picks, no viser), ``inputs`` (every browser value checked at the
edge), ``notices`` (notifications), ``controls`` (the panel), ``display`` and ``layers/``
(what is drawn, redrawn from the state), ``playback``, ``updates`` (coalescing workers),
``share`` (recordings), ``export`` (the Export panel's action), ``app`` (start-up and wiring).
"""
