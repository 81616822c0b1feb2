"""The Ray engine: an indexing job spread over a Ray cluster (one machine, or many sharing a file system).

- `connect`: join or start a cluster, list its nodes, check that every node sees the out dir;
- `scan`: the header scan as Ray tasks over partitions of the archive, merged into the plan on the driver;
- `decode`: reader tasks that decode a task's items in chunks (a chunk that kills its worker is retried
  item by item, and an item that kills a worker again becomes a `WorkerCrashed` failure);
- `encoder`: encoder actors (one per GPU, or `--encoders N` CPU actors spread over the nodes) that encode a
  task's decoded chunks and its reports and write the task's shard themselves;
- `engine`: the driver loop: a bounded number of tasks in flight, results committed to the manifest as they
  come back (in any order), tasks of a lost actor or node run again elsewhere.
"""
