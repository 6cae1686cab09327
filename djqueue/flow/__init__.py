"""Flow control on the database: what every worker of a cluster meets, as rows.

- :mod:`djqueue.flow.models`: the gate of a limited task (its cluster-wide rate's next start; the
  row its admissions lock), the keys of unique tasks, paused queues.
- :mod:`djqueue.flow.store`: paused queues and rate-limit overrides as the sender and the workers
  read and write them.
- :mod:`djqueue.flow.admin`: the admin pages for overrides and paused queues.

The statements that admit limited messages in a worker's round are in
:mod:`djqueue.broker.flow`; unique publishing in :mod:`djqueue.client.unique`; the worker's side
(which tasks are gated, paused queues) in :mod:`djqueue.worker.limits`.
"""
