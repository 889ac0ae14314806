"""The bare claim-and-complete loop, no library around it (one process of several).

Reads a page of pending ids in its own partition of the id space, claims each with
a write conditioned on the document's update time, and marks it completed
with a second conditioned write. Prints its operation counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource

from google.api_core.exceptions import FailedPrecondition
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--of", type=int, required=True)
    parser.add_argument("--page", type=int, default=100)
    args = parser.parse_args()
    db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    col = db.collection("backgroundJobs")
    query = col.where(filter=FieldFilter("status", "==", "pending"))
    if args.index > 0:
        query = query.where(
            filter=FieldFilter(
                "__name__", ">=", col.document(ALPHABET[round(args.index * 62 / args.of)])
            )
        )
    if args.index < args.of - 1:
        query = query.where(
            filter=FieldFilter(
                "__name__", "<", col.document(ALPHABET[round((args.index + 1) * 62 / args.of)])
            )
        )
    query = query.limit(args.page)
    reads = writes = 0
    while True:
        snaps = list(query.stream())
        reads += max(len(snaps), 1)
        if not snaps:
            break
        for snap in snaps:
            try:
                claimed = snap.reference.update(
                    {"status": "in_progress", "startedAt": firestore.SERVER_TIMESTAMP},
                    option=db.write_option(last_update_time=snap.update_time),
                )
                writes += 1
            except FailedPrecondition:
                writes += 1
                continue
            snap.reference.update(
                {"status": "completed", "completedAt": firestore.SERVER_TIMESTAMP},
                option=db.write_option(last_update_time=claimed.update_time),
            )
            writes += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {"reads": reads, "writes": writes, "cpuSeconds": usage.ru_utime + usage.ru_stime}
        )
    )


if __name__ == "__main__":
    main()
