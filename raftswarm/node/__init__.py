"""The `raftswarm-node` daemon: assembles the manager and worker roles from flags and owns process lifecycle."""
