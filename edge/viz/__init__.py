"""Drawing for --show and --save-video."""
