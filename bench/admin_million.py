"""Time the admin's monitor pages and the Prometheus metrics over a big message table (figures,
never asserted).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench python bench/admin_million.py [rows]

Fills ``djqueue_message`` with ``rows`` messages (default 1,000,000; PostgreSQL only, with
``generate_series``), a fifth as many results and two hours of task statistics from 8 worker
processes (20 task names in 5 queues), unless they are there already, then prints the time of each
admin page and of one metrics scrape, and the query plans of the overview's and the scrape's
queries. Use a scratch database: the tables are filled, not emptied.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

FILL_MESSAGES = """
INSERT INTO djqueue_message (task_id, task_name, queue, priority, state, available_at, content_type,
    body, retries, deliveries, created_at, worker, acks_late, error)
SELECT md5(i::text), 'tasks.t' || (i %% 20), 'queue' || (i %% 5), i %% 3,
       CASE WHEN i %% 100 = 0 THEN 'reserved' WHEN i %% 100 = 1 THEN 'started'
            WHEN i %% 1000 = 2 THEN 'rejected' ELSE 'ready' END,
       now() + CASE WHEN i %% 10 = 0 THEN interval '1 hour' ELSE -interval '1 second' * (i %% 3600) END,
       'application/json', '{"args": [1, 2], "kwargs": {}}', 0, 0, now(),
       CASE WHEN i %% 100 < 2 THEN 'w@host' ELSE '' END, false, ''
FROM generate_series(1, %s) AS i
"""
FILL_RESULTS = """
INSERT INTO djqueue_taskresult (task_id, task_name, state, content_type, result, args, kwargs, worker,
    queue, runtime, date_created, date_done)
SELECT 'r' || i, 'tasks.t' || (i %% 20), CASE WHEN i %% 50 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
       'application/json', '3', '[1, 2]', '{}', 'w@host', 'queue' || (i %% 5), 0.01, now(),
       now() - interval '1 second' * (i %% 7200)
FROM generate_series(1, %s) AS i
"""
FILL_STATS = """
INSERT INTO djqueue_taskstat (minute, worker, queue, task_name, state, count, runtime_sum,
    {buckets})
SELECT date_trunc('minute', now()) - interval '1 minute' * m, w, 'queue' || (t % 5),
       'tasks.t' || t, s, 50, 0.5, {values}
FROM generate_series(0, 119) AS m, generate_series(1, 8) AS w, generate_series(0, 19) AS t,
     unnest(ARRAY['SUCCESS', 'FAILURE']) AS s
"""


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    if connection.vendor != "postgresql":
        sys.exit("PostgreSQL only (generate_series)")
    setup_test_environment()
    call_command("migrate", verbosity=0)
    from djqueue.contrib.prometheus import exposition
    from djqueue.models import Message, TaskResult, TaskStat
    from djqueue.stats.models import BUCKET_FIELDS

    if Message.objects.count() < rows:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(FILL_MESSAGES, [rows])
            cursor.execute(FILL_RESULTS, [rows // 5])
            cursor.execute("VACUUM ANALYZE djqueue_message")
            cursor.execute("VACUUM ANALYZE djqueue_taskresult")
        print(f"filled {rows} messages, {rows // 5} results in {time.perf_counter() - started:.1f}s")
    if not TaskStat.objects.exists():
        with connection.cursor() as cursor:
            cursor.execute(FILL_STATS.format(buckets=", ".join(BUCKET_FIELDS),
                                             values=", ".join(["5"] * len(BUCKET_FIELDS))))
            cursor.execute("VACUUM ANALYZE djqueue_taskstat")
    print(f"messages: {Message.objects.count()}, results: {TaskResult.objects.count()}, "
          f"task statistics: {TaskStat.objects.count()}")
    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    some = Message.objects.order_by("id").values_list("id", "task_id").first()
    pages = [
        "/admin/djqueue/message/overview/",
        "/admin/djqueue/message/",
        "/admin/djqueue/message/?status=waiting&queue=queue3",
        "/admin/djqueue/message/?status=rejected",
        "/admin/djqueue/message/?task_name=tasks.t7",
        f"/admin/djqueue/message/?q={some[1]}",
        f"/admin/djqueue/message/?q={some[1][:6]}",
        "/admin/djqueue/message/?q=tasks.t1",
        f"/admin/djqueue/message/{some[0]}/change/",
        "/admin/djqueue/taskresult/",
        "/admin/djqueue/taskresult/?state__exact=FAILURE",
        "/admin/djqueue/workernode/",
    ]
    for page in pages:
        client.get(page)  # warm caches
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            status = client.get(page).status_code
        elapsed = (time.perf_counter() - started) * 1000
        slowest = max(float(q["time"]) for q in queries) * 1000
        print(f"{elapsed:8.1f} ms  {status}  {len(queries):3d} queries (slowest {slowest:.1f} ms)  {page}")
    exposition()  # warm
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as scrape:
        size = len(exposition())
    elapsed = (time.perf_counter() - started) * 1000
    slowest = max(float(q["time"]) for q in scrape) * 1000
    print(f"{elapsed:8.1f} ms  {size} bytes {len(scrape):3d} queries (slowest {slowest:.1f} ms)  "
          "metrics scrape (djqueue.contrib.prometheus)")
    print("\nQuery plans of the overview (one queue) and of the scrape's statistics:")
    with CaptureQueriesContext(connection) as queries:
        client.get("/admin/djqueue/message/overview/")
    seen = set()
    for query in [*queries, *scrape]:
        sql = query["sql"]
        if "djqueue_taskstat" not in sql and ("djqueue_message" not in sql or (
                "'queue0'" not in sql and "RECURSIVE" not in sql)):
            continue
        if sql in seen:
            continue
        seen.add(sql)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
            plan = "\n    ".join(row[0] for row in cursor.fetchall())
        print(f"\n{sql}\n    {plan}")


if __name__ == "__main__":
    main()
