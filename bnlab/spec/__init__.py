"""Experiment specs: the schema read from the registries' rows (schema), YAML with positions
(yaml_text), --set overrides and sweep expansion (sweep), and a spec's runs (experiment)."""
