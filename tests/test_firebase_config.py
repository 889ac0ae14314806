"""firebase.json is what the Firebase CLI accepts.

`tests/data/firebase-config.schema.json` is the schema the Firebase CLI
validates firebase.json with (schema/firebase-config.json in the
firebase-tools 15.34.2 npm package, MIT licence), copied here so that the test
needs no Node.js.
"""

from __future__ import annotations

import json

import jsonschema

from .conftest import ROOT

SCHEMA = json.loads((ROOT / "tests" / "data" / "firebase-config.schema.json").read_text())
CONFIG = json.loads((ROOT / "firebase.json").read_text())


def test_firebase_json_matches_the_firebase_cli_schema() -> None:
    jsonschema.validate(CONFIG, SCHEMA)


def test_the_schema_check_catches_a_mistake() -> None:
    broken = {**CONFIG, "functions": [{**CONFIG["functions"][0], "runtime": "python2"}]}
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken))
    assert errors, "a runtime the CLI does not know must be refused"


def test_the_files_firebase_json_names_exist() -> None:
    assert (ROOT / CONFIG["firestore"]["rules"]).is_file()
    assert (ROOT / CONFIG["firestore"]["indexes"]).is_file()
    source = ROOT / CONFIG["functions"][0]["source"]
    assert (source / "main.py").is_file() and (source / "requirements.txt").is_file()
    emulators = CONFIG["emulators"]
    assert {"firestore", "functions"} <= emulators.keys()
