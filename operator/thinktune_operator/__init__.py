"""Kopf operator for thinktune.io/v1alpha1."""
