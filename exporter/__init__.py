"""edge-classify exporter: from a folder of labelled images to a verified model bundle.

Runs on a workstation with TensorFlow. Importing this package imports neither TensorFlow nor Keras;
the stages do that when they run.
"""
