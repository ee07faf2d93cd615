"""Validate mcpgate config files against the config's JSON Schema (`mcpgate schema`).

    check_schema.py SCHEMA FILE...

A FILE whose top level has `config:` and no `listen:` is a Helm values file: its `config:`
subtree is what is validated. Prints one line per file (`ok FILE` or every error as
`FILE: PATH: message`) and exits 1 if any file is invalid. Run by tests/gateway/schema.rs
with the Python of tests/gateway/.venv (jsonschema, PyYAML).
"""

import json
import sys

import jsonschema
import yaml


class Loader(yaml.SafeLoader):
    """YAML as mcpgate reads it: dates and times are strings (serde_yaml has no timestamp
    type; PyYAML's YAML 1.1 resolver would make them datetime objects)."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    bad = 0
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=Loader)
        if isinstance(doc, dict) and "config" in doc and "listen" not in doc:
            doc = doc["config"]
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if not errors:
            print(f"ok {path}")
            continue
        bad += 1
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"{path}: {where}: {e.message}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
