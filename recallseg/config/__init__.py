"""Configuration: where the YAML files are, the schema, composing and building from a config."""
