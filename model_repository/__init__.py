"""Triton model templates (config.pbtxt.in) and Python-backend models; see serving/repository.py."""
