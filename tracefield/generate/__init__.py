"""The bundled generator: ATI motion-conditioned Wan2.1 image-to-video.

Constants the CLI needs without importing diffusers live here.
"""

MAX_AREAS = {"480p": 480 * 832, "720p": 720 * 1280}
SOLVERS = ("unipc", "dpm++")
OFFLOAD_MODES = ("model", "blocks")
PARALLEL_MODES = ("sequence", "sequence,guidance", "data")  # see .parallel
