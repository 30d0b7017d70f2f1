"""The bundled generator: ATI motion-conditioned Wan2.1 image-to-video."""
