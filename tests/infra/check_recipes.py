"""Checks every example recipe in infra/recipes/ against infra/recipe.schema.json (generated from the Rust types),
and that the schema rejects a typo, so the schema users validate against is the one the code enforces."""
import json
import pathlib
import sys

import jsonschema

root = pathlib.Path(__file__).resolve().parents[2]
schema = json.loads((root / "infra/recipe.schema.json").read_text())
validator = jsonschema.Draft202012Validator(schema)
failed = 0
recipes = sorted((root / "infra/recipes").glob("*.json"))
for path in recipes:
    errors = list(validator.iter_errors(json.loads(path.read_text())))
    for e in errors:
        print(f"FAIL {path.name}: {'/'.join(map(str, e.path))}: {e.message}")
    failed += bool(errors)
    if not errors:
        print(f"ok   {path.name}")

typo = json.loads(recipes[0].read_text())
typo["build"]["scrpit"] = "x"
if validator.is_valid(typo):
    print("FAIL schema accepts an unknown field")
    failed += 1
print(f"{len(recipes) + 1 - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
