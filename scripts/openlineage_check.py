"""Checks OpenLineage run events against the official models of openlineage-python.

    python openlineage_check.py FILE     # one RunEvent per line; exit 1 on the first bad one

Each JSON line is built into `openlineage.client.event_v2.RunEvent` field by field: an unknown
key, a missing required field, a wrong type, a value the models' validators refuse (a runId
that is not a UUID, an eventTime without a time), an unknown facet or a facet whose `_schemaURL`
is not its model's is an error. The built event, serialised again by the package's `Serde`,
must equal the line: nothing was dropped on the way.
"""

import enum
import json
import sys
import types
import typing

import attr
from openlineage.client.event_v2 import RunEvent
from openlineage.client.generated import (
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    schema_dataset,
)
from openlineage.client.serde import Serde

# The facets Conveyor emits, by the key they are emitted under.
FACETS = {
    "parent": parent_run.ParentRunFacet,
    "errorMessage": error_message_run.ErrorMessageRunFacet,
    "jobType": job_type_job.JobTypeJobFacet,
    "schema": schema_dataset.SchemaDatasetFacet,
    "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
}


class Invalid(Exception):
    pass


def build(tp, data, path):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return build(args[0], data, path)
    if origin is list:
        if not isinstance(data, list):
            raise Invalid(f"{path}: expected a list, got {data!r}")
        (item,) = typing.get_args(tp)
        return [build(item, x, f"{path}[{i}]") for i, x in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise Invalid(f"{path}: expected an object, got {data!r}")
        _, value = typing.get_args(tp)
        out = {}
        for k, v in data.items():
            cls = value
            if isinstance(value, type) and value.__name__.endswith("Facet"):
                if k not in FACETS or not issubclass(FACETS[k], value):
                    raise Invalid(f"{path}.{k}: not a {value.__name__} this check knows")
                cls = FACETS[k]
                if v.get("_schemaURL") != cls._get_schema():
                    raise Invalid(f"{path}.{k}._schemaURL: {v.get('_schemaURL')!r}, the model says {cls._get_schema()!r}")
            out[k] = build(cls, v, f"{path}.{k}")
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError as e:
            raise Invalid(f"{path}: {e}") from e
    if attr.has(tp):
        if not isinstance(data, dict):
            raise Invalid(f"{path}: expected an object, got {data!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in attr.fields(tp) if f.init}
        fixed = {f.name for f in attr.fields(tp) if not f.init}
        unknown = set(data) - set(fields) - fixed
        if unknown:
            raise Invalid(f"{path}: unknown keys {sorted(unknown)} for {tp.__name__}")
        kwargs = {
            fields[k].alias: build(hints[k], v, f"{path}.{k}") for k, v in data.items() if k in fields
        }
        try:
            built = tp(**kwargs)
        except (TypeError, ValueError) as e:
            raise Invalid(f"{path}: {tp.__name__}: {e}") from e
        # Fields the model sets itself (a RunEvent's schemaURL) must say what it says.
        for k in fixed & set(data):
            if getattr(built, k) != data[k]:
                raise Invalid(f"{path}.{k}: {data[k]!r}, the model says {getattr(built, k)!r}")
        return built
    if tp is typing.Any:
        return data
    if tp is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return data
    if isinstance(tp, type) and isinstance(data, tp) and not (tp is int and isinstance(data, bool)):
        return data
    raise Invalid(f"{path}: expected {tp}, got {data!r}")


def pruned(v):
    if isinstance(v, dict):
        return {k: pruned(x) for k, x in v.items() if x not in (None, {}, [])}
    if isinstance(v, list):
        return [pruned(x) for x in v]
    return v


def main(path):
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    except OSError as e:
        print(f"{path}: {e.strerror}: no events were written", file=sys.stderr)
        return 1
    if not lines:
        print(f"{path}: no events", file=sys.stderr)
        return 1
    for n, line in enumerate(lines, 1):
        data = json.loads(line)
        try:
            event = build(RunEvent, data, "$")
        except Invalid as e:
            print(f"{path}:{n}: {e}", file=sys.stderr)
            return 1
        again = pruned(Serde.to_dict(event))
        if again != pruned(data):
            print(f"{path}:{n}: changed by the models:\n  {json.dumps(pruned(data), sort_keys=True)}\n  {json.dumps(again, sort_keys=True)}", file=sys.stderr)
            return 1
    print(f"{len(lines)} OpenLineage run events valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
