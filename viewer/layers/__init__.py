"""One module per thing the viewer draws; each owns its viser nodes and reads the ViewerState."""
