"""Calico v3 resources: typed models, selectors, and how calico-node turns them into BIRD config."""
