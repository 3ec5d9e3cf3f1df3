"""The daemon: build the models from the config and run the pipeline over a source."""
