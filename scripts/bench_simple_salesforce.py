#!/usr/bin/env python3
"""One path of simple-salesforce against the sandbox, for the side-by-side bench
(`cargo bench -p connector-salesforce --bench vs_simple_salesforce`).

Usage: bench_simple_salesforce.py PATH INSTANCE_URL TOKEN API_VERSION SOQL PAGE

PATH is `rest` (query_all_iter: REST paging, a dict per record), `bulk2-query`
(bulk2 query: each result page as CSV text, rows counted), `bulk2-records` (the same
pages read into a dict per row with csv.DictReader) or `bulk2-download` (bulk2
download: each result page written to a file in a temporary directory). The sandbox's
certificate is trusted through REQUESTS_CA_BUNDLE. Jobs are first polled after 0.2 s
(the library's default wait is 5 s, meant for a remote org). Prints one line:
`records=N secs=S cpu_s=C peak_rss_kib=K` (secs: the path alone; CPU and peak RSS: the
whole process, start-up and imports included).
"""

import csv
import io
import resource
import sys
import tempfile
import time

from simple_salesforce import Salesforce


def main():
    path, instance_url, token, version, soql, page = sys.argv[1:7]
    page = int(page)
    sf = Salesforce(instance_url=instance_url, session_id=token, version=version)
    records = 0
    start = time.perf_counter()
    if path == "rest":
        for _ in sf.query_all_iter(soql):
            records += 1
    elif path == "bulk2-query":
        for text in sf.bulk2.Account.query(soql, max_records=page, wait=0.2):
            # A header line, then one line per record (the bench's fields hold no newline).
            records += text.count("\n") - 1
    elif path == "bulk2-records":
        # What a caller wanting records does with those pages: a dict per row.
        for text in sf.bulk2.Account.query(soql, max_records=page, wait=0.2):
            for _ in csv.DictReader(io.StringIO(text)):
                records += 1
    elif path == "bulk2-download":
        with tempfile.TemporaryDirectory() as out:
            for result in sf.bulk2.Account.download(soql, path=out, max_records=page, wait=0.2):
                records += result["number_of_records"]
    else:
        sys.exit(f"unknown path {path}")
    secs = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"records={records} secs={secs:.3f} cpu_s={usage.ru_utime + usage.ru_stime:.3f} "
        f"peak_rss_kib={usage.ru_maxrss}"
    )


if __name__ == "__main__":
    main()
